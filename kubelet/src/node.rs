//! The Node object, its Lease heartbeat and its status (upstream `kubelet_node_status.go`,
//! `nodestatus/setters.go` and `nodelease`).
//!
//! [`NodeAgent::register`] creates the Node — labels (hostname, os, arch and their beta twins,
//! plus `--node-labels`), taints from `--register-with-taints`, and a full status — or, when it
//! exists, adds back the labels, taints and annotation the kubelet owns without touching others.
//! [`NodeAgent::run`] then keeps two loops going until shutdown:
//! - the Lease `kube-node-lease/<node>` renewed every `--node-status-update-frequency`, owned by
//!   the Node so it goes away with it;
//! - the status check every `--node-status-update-frequency`: the Node is re-read (its
//!   `spec.podCIDR`, assigned by the controller-manager, is published on [`NodeAgent::pod_cidr`]
//!   and written as the CNI configuration), the status is recomputed, and patched through
//!   `nodes/status` only when something besides heartbeat times changed, or every
//!   `--node-status-report-frequency` regardless.
//!
//! The status itself is a pure function ([`node_status`]) of the machine's facts
//! ([`MachineInfo`], read once), the measurements of the moment ([`Observed`]: file system,
//! memory, PIDs, runtime status and images) and the previous status (transition times are kept
//! while a condition's status holds). While the API server is unreachable, every loop retries
//! with backoff and the outage is logged once.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints,
    NodeSpec, NodeStatus, NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use component_base::events::{EventRecorder, EventType};
use k8s_openapi::api::core::v1::ObjectReference;

use crate::cri::{v1, Runtime};
use crate::{cni, Config, Error};

/// The version the kubelet reports: the API server's (`apiserver::KUBE_VERSION`, which this
/// crate cannot depend on) with the same `+kubrs` suffix, so `kubectl get nodes` shows what
/// `kubectl version` does.
pub const KUBELET_VERSION: &str = "v1.32.5+kubrs";
/// Namespace of node heartbeat Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
pub const LABEL_OS: &str = "kubernetes.io/os";
pub const LABEL_ARCH: &str = "kubernetes.io/arch";
pub const LABEL_BETA_OS: &str = "beta.kubernetes.io/os";
pub const LABEL_BETA_ARCH: &str = "beta.kubernetes.io/arch";
/// Annotation upstream's kubelet sets: volumes are attached by the controller-manager.
pub const ANNOTATION_CONTROLLER_MANAGED_ATTACH: &str =
    "volumes.kubernetes.io/controller-managed-attach-detach";

/// At most this many images are listed in the status (upstream `nodeStatusMaxImages`).
pub const MAX_IMAGES_IN_STATUS: usize = 50;
/// At most this many names per image (upstream `MaxNamesPerImageInNodeStatus`).
pub const MAX_NAMES_PER_IMAGE: usize = 5;
/// Hard eviction threshold `memory.available<100Mi` (upstream's default): MemoryPressure below
/// it, and subtracted from allocatable memory.
pub const EVICTION_MEMORY_AVAILABLE: i64 = 100 << 20;
/// Hard eviction threshold `nodefs.available<10%` (and `imagefs.available<15%`).
pub const EVICTION_NODEFS_AVAILABLE: f64 = 0.10;
pub const EVICTION_IMAGEFS_AVAILABLE: f64 = 0.15;
/// `nodefs.inodesFree<5%`.
pub const EVICTION_NODEFS_INODES_FREE: f64 = 0.05;
/// PIDPressure when fewer than this share of the kernel's PID limit is free. Upstream has no
/// default PID threshold (it is opt-in); this one only fires on a machine about to fail forks.
pub const PID_PRESSURE_FREE: f64 = 0.10;

/// Condition types this kubelet owns, in upstream's order.
const CONDITION_TYPES: [&str; 4] = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"];
/// Bounds of the runtime calls made for the status, so a wedged runtime reports NotReady
/// instead of stalling the heartbeat.
const RUNTIME_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// While NotReady (waiting for the CNI config or the runtime), status is checked this often.
const NOT_READY_RECHECK: Duration = Duration::from_secs(2);

/// Facts about the machine that do not change while the kubelet runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MachineInfo {
    pub num_cpus: i64,
    /// Bytes (MemTotal).
    pub memory_capacity: i64,
    /// `hugepages-2Mi` etc. and their capacity in bytes.
    pub hugepages: BTreeMap<String, i64>,
    pub machine_id: String,
    pub system_uuid: String,
    pub boot_id: String,
    pub kernel_version: String,
    pub os_image: String,
}

impl MachineInfo {
    /// Read from /proc, /sys and /etc; missing files leave fields empty.
    pub fn read() -> MachineInfo {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        let num_cpus = parse_cpu_list(&read("/sys/devices/system/cpu/online"))
            .filter(|n| *n > 0)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get() as i64)
                    .unwrap_or(1)
            });
        let meminfo = parse_meminfo(&read("/proc/meminfo"));
        MachineInfo {
            num_cpus,
            memory_capacity: meminfo.get("MemTotal").copied().unwrap_or(0),
            hugepages: read_hugepages(Path::new("/sys/kernel/mm/hugepages")),
            machine_id: read("/etc/machine-id"),
            system_uuid: read("/sys/class/dmi/id/product_uuid"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            kernel_version: read("/proc/sys/kernel/osrelease"),
            os_image: parse_os_release(&read("/etc/os-release")),
        }
    }
}

/// Size and free space of a file system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsStats {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

/// The file system holding `path` (or its nearest existing ancestor).
pub fn fs_stats(path: &Path) -> Option<FsStats> {
    let p = path.ancestors().find(|p| p.exists())?;
    let s = rustix::fs::statvfs(p).ok()?;
    Some(FsStats {
        capacity_bytes: s.f_blocks.saturating_mul(s.f_frsize),
        available_bytes: s.f_bavail.saturating_mul(s.f_frsize),
        inodes: s.f_files,
        inodes_free: s.f_ffree,
    })
}

/// Process IDs in use and the kernel's limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PidStats {
    pub max: u64,
    pub running: u64,
}

/// Measurements taken at each status check.
#[derive(Debug, Clone)]
pub struct Observed {
    pub nodefs: Option<FsStats>,
    pub imagefs: Option<FsStats>,
    /// Bytes (MemAvailable).
    pub memory_available: Option<i64>,
    pub pids: Option<PidStats>,
    /// `containerd://1.6.20`; `None` when the runtime did not answer.
    pub runtime_version: Option<String>,
    /// The runtime's conditions, or why they could not be read.
    pub runtime_conditions: Result<Vec<v1::RuntimeCondition>, String>,
    /// `None` when the runtime did not answer (the previous list is kept).
    pub images: Option<Vec<v1::Image>>,
    /// Failed kubelet health checks (`PLEG is not healthy: ...`).
    pub health_errors: Vec<String>,
}

impl Default for Observed {
    /// Nothing measured and no answer from the runtime.
    fn default() -> Self {
        Observed {
            nodefs: None,
            imagefs: None,
            memory_available: None,
            pids: None,
            runtime_version: None,
            runtime_conditions: Err("not observed".into()),
            images: None,
            health_errors: Vec::new(),
        }
    }
}

/// What the kubelet's flags and the machine say the Node object should carry (metadata and
/// spec; the status is [`node_status`]).
pub fn initial_node(config: &Config, pod_cidr: Option<&str>) -> Node {
    let mut labels = default_labels(config);
    labels.extend(config.node_labels.clone());
    Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                ANNOTATION_CONTROLLER_MANAGED_ATTACH.to_string(),
                "true".to_string(),
            )])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!config.taints.is_empty()).then(|| config.taints.clone()),
            pod_cidr: pod_cidr.map(str::to_string),
            pod_cidrs: pod_cidr.map(|c| vec![c.to_string()]),
            ..Default::default()
        }),
        status: None,
    }
}

/// `kubernetes.io/hostname`, os and arch labels (and the deprecated beta ones).
pub fn default_labels(config: &Config) -> BTreeMap<String, String> {
    let arch = go_arch();
    BTreeMap::from([
        (LABEL_HOSTNAME.into(), config.node_name.clone()),
        (LABEL_OS.into(), "linux".into()),
        (LABEL_ARCH.into(), arch.clone()),
        (LABEL_BETA_OS.into(), "linux".into()),
        (LABEL_BETA_ARCH.into(), arch),
    ])
}

/// Go's GOARCH for the running machine.
pub fn go_arch() -> String {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        other => other,
    }
    .to_string()
}

/// The existing Node with the kubelet's labels, annotation and taints added back, or `None`
/// when it already carries them. Labels and taints others added stay; a flag taint whose value
/// changed is updated in place (matched by key and effect).
pub fn reconcile_node(existing: &Node, wanted: &Node) -> Option<Node> {
    let mut node = existing.clone();
    let mut changed = false;
    for (field, want) in [
        (&mut node.metadata.labels, &wanted.metadata.labels),
        (&mut node.metadata.annotations, &wanted.metadata.annotations),
    ] {
        let have = field.get_or_insert_with(BTreeMap::new);
        for (k, v) in want.iter().flatten() {
            if have.get(k) != Some(v) {
                have.insert(k.clone(), v.clone());
                changed = true;
            }
        }
    }
    let want_taints = wanted
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    if !want_taints.is_empty() {
        let spec = node.spec.get_or_insert_with(Default::default);
        let taints = spec.taints.get_or_insert_with(Vec::new);
        for want in want_taints {
            match taints
                .iter_mut()
                .find(|t| t.key == want.key && t.effect == want.effect)
            {
                Some(t) if t.value == want.value => {}
                Some(t) => {
                    t.value = want.value.clone();
                    changed = true;
                }
                None => {
                    taints.push(Taint {
                        time_added: None,
                        ..want
                    });
                    changed = true;
                }
            }
        }
    }
    changed.then_some(node)
}

/// A byte count as upstream's canonical binary-SI quantity (`24575088Ki`, `1Gi`, `93269284561`).
pub fn format_bytes(bytes: i64) -> String {
    let bytes = bytes.max(0);
    if bytes == 0 {
        return "0".into();
    }
    for (suffix, shift) in [
        ("Ei", 60),
        ("Pi", 50),
        ("Ti", 40),
        ("Gi", 30),
        ("Mi", 20),
        ("Ki", 10),
    ] {
        if bytes % (1i64 << shift) == 0 {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Millicores as upstream prints CPU (`2`, `1800m`).
pub fn format_millicores(m: i64) -> String {
    let m = m.max(0);
    if m % 1000 == 0 {
        (m / 1000).to_string()
    } else {
        format!("{m}m")
    }
}

/// Capacity and allocatable: allocatable is capacity minus `--system-reserved`/`--kube-reserved`
/// and the hard eviction thresholds (memory 100Mi, ephemeral storage 10%), as upstream computes
/// it.
pub fn resources(
    config: &Config,
    machine: &MachineInfo,
    nodefs: Option<&FsStats>,
) -> (BTreeMap<String, Quantity>, BTreeMap<String, Quantity>) {
    let reserved = |k: &str| config.reserved.get(k).copied().unwrap_or(0);
    let mut cap = BTreeMap::new();
    let mut alloc = BTreeMap::new();
    let mut put = |k: &str, c: String, a: String| {
        cap.insert(k.to_string(), Quantity(c));
        alloc.insert(k.to_string(), Quantity(a));
    };
    let cpu = machine.num_cpus * 1000;
    put(
        "cpu",
        format_millicores(cpu),
        format_millicores(cpu - reserved("cpu")),
    );
    let mem = machine.memory_capacity;
    put(
        "memory",
        format_bytes(mem),
        format_bytes(mem - reserved("memory") - EVICTION_MEMORY_AVAILABLE),
    );
    if let Some(fs) = nodefs {
        let c = fs.capacity_bytes as i64;
        let eviction = (c as f64 * EVICTION_NODEFS_AVAILABLE) as i64;
        put(
            "ephemeral-storage",
            format_bytes(c),
            format_bytes(c - reserved("ephemeral-storage") - eviction),
        );
    }
    put(
        "pods",
        config.max_pods.to_string(),
        config.max_pods.to_string(),
    );
    if machine.hugepages.is_empty() {
        put("hugepages-2Mi", "0".into(), "0".into());
    }
    for (name, bytes) in &machine.hugepages {
        put(name, format_bytes(*bytes), format_bytes(*bytes));
    }
    (cap, alloc)
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    previous: Option<&NodeStatus>,
    now: &Time,
) -> NodeCondition {
    let status = if status { "True" } else { "False" }.to_string();
    let prev = previous
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_));
    let transition = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone().or(Some(now.clone())),
        _ => Some(now.clone()),
    };
    NodeCondition {
        type_: type_.to_string(),
        status,
        reason: Some(reason.to_string()),
        message: Some(message),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: transition,
    }
}

/// Upstream's `RuntimeCondition.String()`, or `<nil>` when the runtime did not report it.
fn runtime_condition_string(c: Option<&v1::RuntimeCondition>) -> String {
    match c {
        Some(c) => format!(
            "{}={} reason:{} message:{}",
            c.r#type, c.status, c.reason, c.message
        ),
        None => "<nil>".into(),
    }
}

/// Why the node is not Ready (empty: Ready), in upstream's words and order.
pub fn not_ready_reasons(obs: &Observed) -> Vec<String> {
    let mut errs = Vec::new();
    match &obs.runtime_conditions {
        Err(_) => errs.push("container runtime is down".to_string()),
        Ok(conds) => {
            errs.extend(obs.health_errors.iter().cloned());
            let find = |t: &str| conds.iter().find(|c| c.r#type == t);
            let rt = find("RuntimeReady");
            if !rt.is_some_and(|c| c.status) {
                errs.push(format!(
                    "container runtime not ready: {}",
                    runtime_condition_string(rt)
                ));
            }
            let net = find("NetworkReady");
            if !net.is_some_and(|c| c.status) {
                errs.push(format!(
                    "container runtime network not ready: {}",
                    runtime_condition_string(net)
                ));
            }
        }
    }
    if obs.runtime_conditions.is_err() {
        errs.extend(obs.health_errors.iter().cloned());
    }
    errs
}

/// Go's aggregate error text: one error as is, several as `[a, b]`.
fn aggregate(errs: &[String]) -> String {
    match errs {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// The node's status from the machine, the measurements and the previous status (whose
/// condition transition times are kept while a condition's status holds). `now` is the
/// heartbeat time.
pub fn node_status(
    config: &Config,
    node_ip: IpAddr,
    machine: &MachineInfo,
    obs: &Observed,
    previous: Option<&NodeStatus>,
    now: Timestamp,
) -> NodeStatus {
    // The API keeps whole seconds; computing with them keeps transition times comparable.
    let now = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    let (capacity, allocatable) = resources(config, machine, obs.nodefs.as_ref());

    let memory_pressure = obs
        .memory_available
        .is_some_and(|a| a < EVICTION_MEMORY_AVAILABLE);
    let below = |fs: Option<&FsStats>, frac: f64| {
        fs.is_some_and(|f| {
            f.capacity_bytes > 0 && (f.available_bytes as f64) < f.capacity_bytes as f64 * frac
        })
    };
    let disk_pressure = below(obs.nodefs.as_ref(), EVICTION_NODEFS_AVAILABLE)
        || below(obs.imagefs.as_ref(), EVICTION_IMAGEFS_AVAILABLE)
        || obs.nodefs.is_some_and(|f| {
            f.inodes > 0 && (f.inodes_free as f64) < f.inodes as f64 * EVICTION_NODEFS_INODES_FREE
        });
    let pid_pressure = obs.pids.is_some_and(|p| {
        p.max > 0 && (p.max.saturating_sub(p.running) as f64) < p.max as f64 * PID_PRESSURE_FREE
    });
    let not_ready = not_ready_reasons(obs);

    let mut conditions = Vec::with_capacity(4);
    conditions.push(if memory_pressure {
        condition(
            "MemoryPressure",
            true,
            "KubeletHasInsufficientMemory",
            "kubelet has insufficient memory available".into(),
            previous,
            &now,
        )
    } else {
        condition(
            "MemoryPressure",
            false,
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available".into(),
            previous,
            &now,
        )
    });
    conditions.push(if disk_pressure {
        condition(
            "DiskPressure",
            true,
            "KubeletHasDiskPressure",
            "kubelet has disk pressure".into(),
            previous,
            &now,
        )
    } else {
        condition(
            "DiskPressure",
            false,
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure".into(),
            previous,
            &now,
        )
    });
    conditions.push(if pid_pressure {
        condition(
            "PIDPressure",
            true,
            "KubeletHasInsufficientPID",
            "kubelet has insufficient PID available".into(),
            previous,
            &now,
        )
    } else {
        condition(
            "PIDPressure",
            false,
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available".into(),
            previous,
            &now,
        )
    });
    conditions.push(if not_ready.is_empty() {
        condition(
            "Ready",
            true,
            "KubeletReady",
            "kubelet is posting ready status".into(),
            previous,
            &now,
        )
    } else {
        condition(
            "Ready",
            false,
            "KubeletNotReady",
            aggregate(&not_ready),
            previous,
            &now,
        )
    });

    let runtime_version = obs
        .runtime_version
        .clone()
        .or_else(|| {
            previous
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.container_runtime_version.clone())
        })
        .unwrap_or_default();
    let images = match &obs.images {
        Some(imgs) => Some(status_images(imgs)),
        None => previous.and_then(|s| s.images.clone()),
    };

    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: config.node_name.clone(),
            },
        ]),
        allocatable: Some(allocatable),
        capacity: Some(capacity),
        conditions: Some(conditions),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(config.server_address.port()),
            }),
        }),
        images,
        node_info: Some(NodeSystemInfo {
            architecture: go_arch(),
            boot_id: machine.boot_id.clone(),
            container_runtime_version: runtime_version,
            kernel_version: machine.kernel_version.clone(),
            kube_proxy_version: KUBELET_VERSION.into(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: machine.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: machine.os_image.clone(),
            system_uuid: machine.system_uuid.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The status's image list: the largest 50, names as digests then tags (at most 5).
pub fn status_images(images: &[v1::Image]) -> Vec<ContainerImage> {
    let mut sorted: Vec<&v1::Image> = images.iter().collect();
    sorted.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.id.cmp(&b.id)));
    sorted
        .into_iter()
        .take(MAX_IMAGES_IN_STATUS)
        .map(|i| {
            let mut names: Vec<String> = i
                .repo_digests
                .iter()
                .chain(i.repo_tags.iter())
                .cloned()
                .collect();
            names.truncate(MAX_NAMES_PER_IMAGE);
            ContainerImage {
                names: Some(names),
                size_bytes: Some(i.size as i64),
            }
        })
        .collect()
}

/// Node events for condition changes between `old` and `new`, as upstream records them
/// (`NodeReady`, `NodeNotReady`, `NodeHasSufficientMemory`, ...): every condition whose status
/// differs, or all of them on the first report.
pub fn condition_events(
    old: Option<&NodeStatus>,
    new: &NodeStatus,
) -> Vec<(EventType, &'static str)> {
    let status_of = |s: Option<&NodeStatus>, t: &str| {
        s.and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == t))
            .map(|c| c.status.clone())
    };
    let mut out = Vec::new();
    for t in CONDITION_TYPES {
        let Some(now) = status_of(Some(new), t) else {
            continue;
        };
        if status_of(old, t).as_ref() == Some(&now) {
            continue;
        }
        let on = now == "True";
        let ev = match (t, on) {
            ("MemoryPressure", false) => (EventType::Normal, "NodeHasSufficientMemory"),
            ("MemoryPressure", true) => (EventType::Normal, "NodeHasInsufficientMemory"),
            ("DiskPressure", false) => (EventType::Normal, "NodeHasNoDiskPressure"),
            ("DiskPressure", true) => (EventType::Normal, "NodeHasDiskPressure"),
            ("PIDPressure", false) => (EventType::Normal, "NodeHasSufficientPID"),
            ("PIDPressure", true) => (EventType::Normal, "NodeHasInsufficientPID"),
            (_, true) => (EventType::Normal, "NodeReady"),
            (_, false) => (EventType::Normal, "NodeNotReady"),
        };
        out.push(ev);
    }
    out
}

/// Whether `new` differs from `old` in anything the kubelet reports, ignoring heartbeat times
/// (upstream `nodeStatusHasChanged`). Conditions and resources others added to `old` are not
/// compared.
pub fn status_changed(old: Option<&NodeStatus>, new: &NodeStatus) -> bool {
    let Some(old) = old else { return true };
    let ours = |s: &NodeStatus| -> Vec<NodeCondition> {
        let mut cs: Vec<NodeCondition> = s
            .conditions
            .iter()
            .flatten()
            .filter(|c| CONDITION_TYPES.contains(&c.type_.as_str()))
            .cloned()
            .map(|mut c| {
                c.last_heartbeat_time = None;
                c
            })
            .collect();
        cs.sort_by(|a, b| a.type_.cmp(&b.type_));
        cs
    };
    let subset = |old: &Option<BTreeMap<String, Quantity>>,
                  new: &Option<BTreeMap<String, Quantity>>| {
        new.iter()
            .flatten()
            .all(|(k, v)| old.as_ref().and_then(|o| o.get(k)) == Some(v))
    };
    ours(old) != ours(new)
        || old.addresses != new.addresses
        || !subset(&old.capacity, &new.capacity)
        || !subset(&old.allocatable, &new.allocatable)
        || old.node_info != new.node_info
        || old.images != new.images
        || old.daemon_endpoints != new.daemon_endpoints
}

/// The podCIDR the kubelet uses: the Node's (assigned by the controller-manager) or the flag's.
pub fn effective_pod_cidr(node: Option<&Node>, flag: Option<&str>) -> Option<String> {
    node.and_then(|n| n.spec.as_ref())
        .and_then(|s| {
            s.pod_cidr
                .clone()
                .or_else(|| s.pod_cidrs.as_ref()?.first().cloned())
        })
        .filter(|c| !c.is_empty())
        .or_else(|| flag.map(str::to_string))
}

/// The body of a Lease renewal (a merge patch) or creation.
pub fn lease_object(config: &Config, node_uid: Option<&str>, now: Timestamp) -> serde_json::Value {
    let mut lease = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": config.node_name, "namespace": LEASE_NAMESPACE},
        "spec": {
            "holderIdentity": config.node_name,
            "leaseDurationSeconds": config.node_lease_duration_seconds,
            "renewTime": MicroTime(now),
        },
    });
    if let Some(uid) = node_uid {
        let owner = OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: config.node_name.clone(),
            uid: uid.to_string(),
            ..Default::default()
        };
        lease["metadata"]["ownerReferences"] = json!([owner]);
    }
    lease
}

// ---------------------------------------------------------------------------------------------
// Reading the machine.

/// `/proc/meminfo` values in bytes.
pub fn parse_meminfo(s: &str) -> BTreeMap<String, i64> {
    s.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let mut parts = v.split_whitespace();
            let n: i64 = parts.next()?.parse().ok()?;
            let mult = if parts.next() == Some("kB") { 1024 } else { 1 };
            Some((k.trim().to_string(), n * mult))
        })
        .collect()
}

/// `PRETTY_NAME` from `/etc/os-release` (unquoted), or `Linux`.
pub fn parse_os_release(s: &str) -> String {
    s.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "Linux".into())
}

/// The number of CPUs in a kernel CPU list (`0-3,5`).
pub fn parse_cpu_list(s: &str) -> Option<i64> {
    let mut n = 0;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (i64, i64) = (a.parse().ok()?, b.parse().ok()?);
                n += b.checked_sub(a)? + 1;
            }
            None => {
                part.parse::<i64>().ok()?;
                n += 1;
            }
        }
    }
    Some(n)
}

fn read_hugepages(dir: &Path) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(kb) = name
            .to_str()
            .and_then(|n| n.strip_prefix("hugepages-"))
            .and_then(|n| n.strip_suffix("kB"))
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        let pages: i64 = std::fs::read_to_string(e.path().join("nr_hugepages"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        out.insert(
            format!("hugepages-{}", format_bytes(kb * 1024)),
            pages * kb * 1024,
        );
    }
    out
}

/// The route the node's address is taken from: the default route, else the first other route
/// not on loopback, as (interface, gateway or an address in the routed network).
pub fn parse_route_target(route_table: &str) -> Option<(String, Ipv4Addr)> {
    let hex = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_le_bytes()))
    };
    let mut fallback = None;
    for l in route_table.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 || f[0] == "lo" {
            continue;
        }
        let (Some(dest), Some(gw), Ok(flags), Some(mask)) = (
            hex(f[1]),
            hex(f[2]),
            u32::from_str_radix(f[3], 16),
            hex(f[7]),
        ) else {
            continue;
        };
        if flags & 1 == 0 {
            continue; // not up
        }
        if dest.is_unspecified() && mask.is_unspecified() {
            let target = if gw.is_unspecified() {
                Ipv4Addr::new(8, 8, 8, 8)
            } else {
                gw
            };
            return Some((f[0].to_string(), target));
        }
        if fallback.is_none() {
            let target = if gw.is_unspecified() {
                Ipv4Addr::from(u32::from(dest) | 1)
            } else {
                gw
            };
            fallback = Some((f[0].to_string(), target));
        }
    }
    fallback
}

/// The IPv4 address of the interface holding the default route: the kernel's source address
/// for a (never sent) UDP "connection" to the route's gateway. 127.0.0.1 if there is no route.
pub fn detect_node_ip() -> IpAddr {
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let found = parse_route_target(&routes).and_then(|(iface, target)| {
        let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
        sock.connect((target, 9)).ok()?;
        let ip = sock.local_addr().ok()?.ip();
        tracing::debug!(%iface, %ip, "detected node IP from the routing table");
        Some(ip)
    });
    found.unwrap_or_else(|| {
        tracing::warn!("no route to derive the node IP from; using 127.0.0.1 (set --node-ip)");
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    })
}

fn read_pid_stats() -> Option<PidStats> {
    let max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // /proc/loadavg: "0.10 0.20 0.30 running/total last_pid"
    let load = std::fs::read_to_string("/proc/loadavg").ok()?;
    let running = load
        .split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()?;
    Some(PidStats { max, running })
}

/// `containerd://1.6.20` from a CRI Version answer. Like upstream, a version that is not
/// semantic (Debian's `1.6.20~ds1`) is shortened to its numeric part.
pub fn runtime_version_string(v: &v1::VersionResponse) -> String {
    let ver = v.runtime_version.trim_start_matches('v');
    let semver_like = ver
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'));
    let ver = if semver_like {
        ver.to_string()
    } else {
        ver.chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect::<String>()
            .trim_end_matches('.')
            .to_string()
    };
    format!("{}://{}", v.runtime_name, ver)
}

/// The runtime's part of [`Observed`]: version, conditions, images and the image file system.
pub async fn observe_runtime(runtime: &dyn Runtime, obs: &mut Observed) {
    async fn bounded<T>(
        f: impl std::future::Future<Output = crate::cri::CriResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(RUNTIME_CALL_TIMEOUT, f).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }
    obs.runtime_version = bounded(runtime.version())
        .await
        .ok()
        .map(|v| runtime_version_string(&v));
    obs.runtime_conditions = bounded(runtime.status())
        .await
        .map(|s| s.status.map(|s| s.conditions).unwrap_or_default());
    obs.images = bounded(runtime.list_images()).await.ok();
    obs.imagefs = bounded(runtime.image_fs_info())
        .await
        .ok()
        .and_then(|i| i.image_filesystems.into_iter().next())
        .and_then(|u| u.fs_id)
        .filter(|id| !id.mountpoint.is_empty())
        .and_then(|id| fs_stats(Path::new(&id.mountpoint)));
}

// ---------------------------------------------------------------------------------------------
// The agent.

type HealthCheck = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Logs an API outage once when it starts and once when it ends.
#[derive(Default)]
struct Outage {
    since: Option<Instant>,
}

impl Outage {
    fn failed(&mut self, what: &str, e: &dyn std::fmt::Display) {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            tracing::warn!(error = %e, "{what} failed; retrying with backoff until the API server answers");
        } else {
            tracing::debug!(error = %e, "{what} failed again");
        }
    }
    fn ok(&mut self) {
        if let Some(t) = self.since.take() {
            tracing::info!(after = ?t.elapsed(), "API server reachable again");
        }
    }
}

struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Backoff {
            next: Duration::from_millis(200),
            max,
        }
    }
    fn step(&mut self) -> Duration {
        let d = self.next.min(self.max);
        self.next = (self.next * 2).min(self.max);
        d
    }
    fn reset(&mut self) {
        self.next = Duration::from_millis(200);
    }
}

/// Errors worth retrying: transport failures, 5xx and 429.
fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code >= 500 || s.code == 429,
        _ => true,
    }
}

fn api_code(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(s) => Some(s.code),
        _ => None,
    }
}

#[derive(Default)]
struct StatusState {
    last_report: Option<Instant>,
    node_uid: Option<String>,
    cni_error: Option<String>,
    /// The CIDR whose masquerade rules are installed, and the last error installing them.
    masquerade: Option<cni::Cidr>,
    masquerade_error: Option<String>,
}

/// Registers the node, renews its Lease, reports its status, and publishes its podCIDR.
pub struct NodeAgent {
    config: Arc<Config>,
    client: kube::Client,
    runtime: Arc<dyn Runtime>,
    node_ip: IpAddr,
    machine: MachineInfo,
    pod_cidr: watch::Sender<Option<String>>,
    state: Mutex<StatusState>,
    outage: Mutex<Outage>,
    health_checks: Mutex<Vec<(String, HealthCheck)>>,
    recorder: Mutex<Option<EventRecorder>>,
}

impl NodeAgent {
    /// Reads the machine's facts and, without `--node-ip`, detects the node's address.
    pub fn new(config: Arc<Config>, client: kube::Client, runtime: Arc<dyn Runtime>) -> Self {
        let (pod_cidr, _) = watch::channel(config.pod_cidr.clone());
        let node_ip = config.node_ip.unwrap_or_else(detect_node_ip);
        NodeAgent {
            machine: MachineInfo::read(),
            node_ip,
            config,
            client,
            runtime,
            pod_cidr,
            state: Mutex::new(StatusState::default()),
            outage: Mutex::new(Outage::default()),
            health_checks: Mutex::new(Vec::new()),
            recorder: Mutex::new(None),
        }
    }

    /// The node's primary address (the --node-ip flag, or detected).
    pub fn node_ip(&self) -> IpAddr {
        self.node_ip
    }

    /// The machine facts reported in the status.
    pub fn machine(&self) -> &MachineInfo {
        &self.machine
    }

    /// The node's podCIDR as the API assigns it (or --pod-cidr).
    pub fn pod_cidr(&self) -> watch::Receiver<Option<String>> {
        self.pod_cidr.subscribe()
    }

    /// Add a check whose failure makes the node NotReady with `<name> is not healthy: <error>`
    /// (upstream's runtime-state health checks, e.g. `PLEG`).
    pub fn add_health_check(
        &self,
        name: impl Into<String>,
        check: impl Fn() -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.health_checks
            .lock()
            .unwrap()
            .push((name.into(), Box::new(check)));
    }

    /// Record node events on condition changes (`NodeReady`, `NodeHasSufficientMemory`, ...) with
    /// `recorder`.
    pub fn set_event_recorder(&self, recorder: EventRecorder) {
        *self.recorder.lock().unwrap() = Some(recorder);
    }

    fn record(&self, type_: EventType, reason: &str, message: String) {
        if let Some(r) = self.recorder.lock().unwrap().as_ref() {
            // Upstream refers to its node with the node name as UID.
            let node_ref = ObjectReference {
                kind: Some("Node".into()),
                name: Some(self.config.node_name.clone()),
                uid: Some(self.config.node_name.clone()),
                ..Default::default()
            };
            r.event_ref(node_ref, type_, reason, message);
        }
    }

    fn record_transitions(&self, old: Option<&NodeStatus>, new: &NodeStatus) {
        for (t, reason) in condition_events(old, new) {
            let msg = format!("Node {} status is now: {reason}", self.config.node_name);
            self.record(t, reason, msg);
        }
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    /// Measure the node now (file systems, memory, PIDs, runtime, health checks).
    pub async fn observe(&self) -> Observed {
        let mut obs = Observed {
            nodefs: fs_stats(&self.config.root_dir),
            memory_available: std::fs::read_to_string("/proc/meminfo")
                .ok()
                .and_then(|s| parse_meminfo(&s).get("MemAvailable").copied()),
            pids: read_pid_stats(),
            ..Default::default()
        };
        observe_runtime(self.runtime.as_ref(), &mut obs).await;
        obs.health_errors = self
            .health_checks
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(name, f)| f().err().map(|e| format!("{name} is not healthy: {e}")))
            .collect();
        obs
    }

    /// The status to report now, given the one the API has.
    pub async fn compute_status(&self, previous: Option<&NodeStatus>) -> NodeStatus {
        let obs = self.observe().await;
        node_status(
            &self.config,
            self.node_ip,
            &self.machine,
            &obs,
            previous,
            Timestamp::now(),
        )
    }

    /// Create or update the Node object: one attempt, so the caller's retry loop can watch its
    /// shutdown token. An unreachable API server is logged once per outage here (the caller
    /// need not log each retry); the error says whether retrying can help.
    pub async fn register(&self) -> Result<Node, Error> {
        match self.register_once().await {
            Ok(n) => {
                self.outage.lock().unwrap().ok();
                Ok(n)
            }
            Err(e) => {
                if retryable(&e) {
                    self.outage
                        .lock()
                        .unwrap()
                        .failed("registering the node", &e);
                } else {
                    tracing::error!(node = %self.config.node_name, error = %e, "the API server rejected the node");
                }
                Err(Error::Node(format!(
                    "registering node {:?}: {e}",
                    self.config.node_name
                )))
            }
        }
    }

    async fn register_once(&self) -> Result<Node, kube::Error> {
        let api = self.nodes();
        let wanted = initial_node(&self.config, self.config.pod_cidr.as_deref());
        let mut node = wanted.clone();
        let status = self.compute_status(None).await;
        node.status = Some(status.clone());
        let node = match api.create(&PostParams::default(), &node).await {
            Ok(n) => {
                tracing::info!(node = %self.config.node_name, "registered node");
                self.record_transitions(None, &status);
                n
            }
            Err(e) if api_code(&e) == Some(409) => {
                let existing = self.reconcile_existing(&api, &wanted).await?;
                let status = self.compute_status(existing.status.as_ref()).await;
                let n = self.patch_status(&status).await?;
                self.record_transitions(existing.status.as_ref(), &status);
                tracing::info!(node = %self.config.node_name, "node already registered; updated it");
                n
            }
            Err(e) => return Err(e),
        };
        {
            let mut st = self.state.lock().unwrap();
            st.node_uid = node.metadata.uid.clone();
            st.last_report = Some(Instant::now());
        }
        self.observe_pod_cidr(&node);
        Ok(node)
    }

    async fn reconcile_existing(
        &self,
        api: &Api<Node>,
        wanted: &Node,
    ) -> Result<Node, kube::Error> {
        let mut attempt = 0;
        loop {
            let existing = api.get(&self.config.node_name).await?;
            let Some(updated) = reconcile_node(&existing, wanted) else {
                return Ok(existing);
            };
            match api
                .replace(&self.config.node_name, &PostParams::default(), &updated)
                .await
            {
                Ok(n) => return Ok(n),
                Err(e) if api_code(&e) == Some(409) && attempt < 5 => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    async fn patch_status(&self, status: &NodeStatus) -> Result<Node, kube::Error> {
        let patch = json!({ "status": status });
        self.nodes()
            .patch_status(
                &self.config.node_name,
                &PatchParams::default(),
                &Patch::Strategic(patch),
            )
            .await
    }

    /// Pods' outbound masquerade for `cidr` (once per CIDR; a changed CIDR replaces the old
    /// rules). Errors are logged once each and retried at the next observation.
    fn ensure_masquerade(&self, st: &mut StatusState, cidr: &str) {
        let Ok(cidr) = cni::Cidr::parse(cidr) else {
            return; // write_config reports the invalid CIDR
        };
        if st.masquerade == Some(cidr) {
            return;
        }
        if let Some(old) = st.masquerade.take() {
            crate::masquerade::remove(&old);
        }
        match crate::masquerade::ensure(&cidr) {
            Ok(()) => {
                tracing::info!(%cidr, chain = %crate::masquerade::chain(&cidr), "pod masquerade rules installed");
                st.masquerade = Some(cidr);
                st.masquerade_error = None;
            }
            Err(e) => {
                if st.masquerade_error.as_deref() != Some(e.as_str()) {
                    tracing::error!(%cidr, error = %e, "cannot install pod masquerade rules");
                    st.masquerade_error = Some(e);
                }
            }
        }
    }

    /// Make sure the CNI configuration matches the effective podCIDR, then publish it (so a
    /// receiver seeing a CIDR can rely on the configuration being in place).
    fn observe_pod_cidr(&self, node: &Node) {
        let cidr = effective_pod_cidr(Some(node), self.config.pod_cidr.as_deref());
        if let (Some(cidr), Some(dir)) = (&cidr, &self.config.cni_conf_dir) {
            let data_dir = self.config.root_dir.join("cni").join("networks");
            let res = cni::write_config(dir, cidr, &data_dir);
            let mut st = self.state.lock().unwrap();
            if self.config.pod_masquerade {
                self.ensure_masquerade(&mut st, cidr);
            }
            match res {
                Ok(true) => {
                    st.cni_error = None;
                    tracing::info!(dir = %dir.display(), %cidr, "wrote CNI configuration");
                }
                Ok(false) => st.cni_error = None,
                Err(e) => {
                    let msg = e.to_string();
                    if st.cni_error.as_deref() != Some(msg.as_str()) {
                        tracing::error!(dir = %dir.display(), %cidr, error = %msg, "cannot write CNI configuration");
                        st.cni_error = Some(msg);
                    }
                }
            }
        }
        let changed = self.pod_cidr.send_if_modified(|cur| {
            if *cur != cidr {
                cur.clone_from(&cidr);
                true
            } else {
                false
            }
        });
        if changed {
            tracing::info!(node = %self.config.node_name, pod_cidr = ?cidr, "pod CIDR");
        }
    }

    /// One status check: re-read the Node (registering it again if it was deleted), follow its
    /// podCIDR, and patch the status if it changed or a report is due. Returns whether the node
    /// is Ready.
    pub async fn sync_status(&self) -> Result<bool, kube::Error> {
        let Some(node) = self.nodes().get_opt(&self.config.node_name).await? else {
            tracing::warn!(node = %self.config.node_name, "Node object is gone; registering again");
            let n = self.register_once().await?;
            return Ok(is_ready(n.status.as_ref()));
        };
        self.state.lock().unwrap().node_uid = node.metadata.uid.clone();
        self.observe_pod_cidr(&node);
        let status = self.compute_status(node.status.as_ref()).await;
        let due = self
            .state
            .lock()
            .unwrap()
            .last_report
            .is_none_or(|t| t.elapsed() >= self.config.node_status_report_frequency);
        if due || status_changed(node.status.as_ref(), &status) {
            self.patch_status(&status).await?;
            self.record_transitions(node.status.as_ref(), &status);
            self.state.lock().unwrap().last_report = Some(Instant::now());
            tracing::debug!(node = %self.config.node_name, "updated node status");
        }
        Ok(is_ready(Some(&status)))
    }

    /// Renew (or create) the node's Lease.
    pub async fn renew_lease(&self) -> Result<(), kube::Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let uid = self.state.lock().unwrap().node_uid.clone();
        let body = lease_object(&self.config, uid.as_deref(), Timestamp::now());
        match api
            .patch(
                &self.config.node_name,
                &PatchParams::default(),
                &Patch::Merge(&body),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(404) => {
                let lease: Lease = serde_json::from_value(body).map_err(kube::Error::SerdeError)?;
                match api.create(&PostParams::default(), &lease).await {
                    // Someone (a previous run) created it meanwhile: renewed next time.
                    Ok(_) => Ok(()),
                    Err(e) if api_code(&e) == Some(409) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Lease heartbeats, status updates and podCIDR/CNI config until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let period = self.config.node_status_update_frequency;
        let lease = {
            let this = self.clone();
            let shutdown = shutdown.clone();
            async move {
                let mut backoff = Backoff::new(period);
                loop {
                    let delay = match this.renew_lease().await {
                        Ok(()) => {
                            backoff.reset();
                            this.outage.lock().unwrap().ok();
                            period
                        }
                        Err(e) => {
                            this.outage
                                .lock()
                                .unwrap()
                                .failed("renewing the node lease", &e);
                            backoff.step()
                        }
                    };
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        };
        let status = async move {
            let mut backoff = Backoff::new(period);
            loop {
                let delay = match self.sync_status().await {
                    Ok(ready) => {
                        backoff.reset();
                        self.outage.lock().unwrap().ok();
                        if ready {
                            period
                        } else {
                            period.min(NOT_READY_RECHECK)
                        }
                    }
                    Err(e) => {
                        self.outage
                            .lock()
                            .unwrap()
                            .failed("updating the node status", &e);
                        backoff.step()
                    }
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        };
        tokio::join!(lease, status);
    }
}

/// Whether a status has Ready=True.
pub fn is_ready(status: Option<&NodeStatus>) -> bool {
    status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::FakeRuntime;
    use crate::Args;
    use clap::Parser;

    fn config(extra: &[&str]) -> Config {
        let mut argv = vec!["kubelet", "--hostname-override", "node-a"];
        argv.extend_from_slice(extra);
        Config::try_from(Args::parse_from(argv)).unwrap()
    }

    fn machine() -> MachineInfo {
        MachineInfo {
            num_cpus: 2,
            memory_capacity: 24575088 * 1024,
            hugepages: BTreeMap::new(),
            machine_id: "mid".into(),
            system_uuid: "uuid".into(),
            boot_id: "boot".into(),
            kernel_version: "6.18.0".into(),
            os_image: "Debian GNU/Linux 12 (bookworm)".into(),
        }
    }

    fn cond(t: &str, status: bool) -> v1::RuntimeCondition {
        v1::RuntimeCondition {
            r#type: t.into(),
            status,
            reason: if status { "" } else { "NetworkPluginNotReady" }.into(),
            message: if status {
                ""
            } else {
                "Network plugin returns error: cni plugin not initialized"
            }
            .into(),
        }
    }

    fn healthy() -> Observed {
        Observed {
            nodefs: Some(FsStats {
                capacity_bytes: 100 << 30,
                available_bytes: 50 << 30,
                inodes: 1000,
                inodes_free: 900,
            }),
            imagefs: None,
            memory_available: Some(8 << 30),
            pids: Some(PidStats {
                max: 32768,
                running: 118,
            }),
            runtime_version: Some("containerd://1.6.20".into()),
            runtime_conditions: Ok(vec![cond("RuntimeReady", true), cond("NetworkReady", true)]),
            images: Some(vec![]),
            health_errors: vec![],
        }
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn conditions(s: &NodeStatus) -> Vec<(String, String, String)> {
        s.conditions
            .iter()
            .flatten()
            .map(|c| {
                (
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn quantities_print_like_upstream() {
        let cases = [
            (24575088 * 1024, "24575088Ki"),
            (1 << 30, "1Gi"),
            (3 << 20, "3Mi"),
            (93269284561, "93269284561"),
            (0, "0"),
            (-5, "0"),
        ];
        for (n, want) in cases {
            assert_eq!(format_bytes(n), want, "{n}");
        }
        assert_eq!(format_millicores(2000), "2");
        assert_eq!(format_millicores(1800), "1800m");
    }

    #[test]
    fn allocatable_subtracts_reservations_and_eviction_thresholds() {
        let c = config(&[
            "--system-reserved",
            "cpu=100m,memory=100Mi",
            "--kube-reserved",
            "cpu=100m,ephemeral-storage=1Gi",
            "--max-pods",
            "50",
        ]);
        let fs = FsStats {
            capacity_bytes: 100 << 30,
            ..Default::default()
        };
        let (cap, alloc) = resources(&c, &machine(), Some(&fs));
        let get = |m: &BTreeMap<String, Quantity>, k: &str| m[k].0.clone();
        assert_eq!(get(&cap, "cpu"), "2");
        assert_eq!(get(&alloc, "cpu"), "1800m");
        assert_eq!(get(&cap, "memory"), "24575088Ki");
        assert_eq!(get(&alloc, "memory"), "24370288Ki"); // minus 100Mi reserved, 100Mi eviction
        assert_eq!(get(&cap, "ephemeral-storage"), "100Gi");
        // 100Gi - 1Gi - 10% of 100Gi
        assert_eq!(get(&alloc, "ephemeral-storage"), "89Gi");
        // A capacity whose 10% is not Ki-aligned prints as plain bytes, as upstream's does.
        let odd = FsStats {
            capacity_bytes: 101203028 * 1024,
            ..Default::default()
        };
        let (_, alloc) = resources(&config(&[]), &machine(), Some(&odd));
        assert_eq!(get(&alloc, "ephemeral-storage"), "93268710605");
        assert_eq!(get(&cap, "pods"), "50");
        assert_eq!(get(&alloc, "hugepages-2Mi"), "0");
    }

    #[test]
    fn conditions_follow_measurements_and_runtime() {
        let c = config(&[]);
        type Case = (
            &'static str,
            Box<dyn Fn(&mut Observed)>,
            [&'static str; 4],
            &'static str,
        );
        let cases: Vec<Case> = vec![
            ("healthy", Box::new(|_| {}), ["False", "False", "False", "True"], "kubelet is posting ready status"),
            (
                "memory below 100Mi",
                Box::new(|o| o.memory_available = Some(99 << 20)),
                ["True", "False", "False", "True"],
                "kubelet is posting ready status",
            ),
            (
                "nodefs below 10%",
                Box::new(|o| o.nodefs.as_mut().unwrap().available_bytes = 9 << 30),
                ["False", "True", "False", "True"],
                "kubelet is posting ready status",
            ),
            (
                "inodes below 5%",
                Box::new(|o| o.nodefs.as_mut().unwrap().inodes_free = 40),
                ["False", "True", "False", "True"],
                "kubelet is posting ready status",
            ),
            (
                "imagefs below 15%",
                Box::new(|o| {
                    o.imagefs = Some(FsStats {
                        capacity_bytes: 100,
                        available_bytes: 14,
                        ..Default::default()
                    })
                }),
                ["False", "True", "False", "True"],
                "kubelet is posting ready status",
            ),
            (
                "pids nearly exhausted",
                Box::new(|o| o.pids = Some(PidStats { max: 1000, running: 950 })),
                ["False", "False", "True", "True"],
                "kubelet is posting ready status",
            ),
            (
                "no CNI config yet",
                Box::new(|o| {
                    o.runtime_conditions =
                        Ok(vec![cond("RuntimeReady", true), cond("NetworkReady", false)])
                }),
                ["False", "False", "False", "False"],
                "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized",
            ),
            (
                "runtime down",
                Box::new(|o| o.runtime_conditions = Err("connection refused".into())),
                ["False", "False", "False", "False"],
                "container runtime is down",
            ),
            (
                "runtime silent about conditions and a failing health check",
                Box::new(|o| {
                    o.runtime_conditions = Ok(vec![]);
                    o.health_errors = vec!["PLEG is not healthy: relist stuck".into()];
                }),
                ["False", "False", "False", "False"],
                "[PLEG is not healthy: relist stuck, container runtime not ready: <nil>, container runtime network not ready: <nil>]",
            ),
        ];
        for (name, tweak, want, ready_msg) in cases {
            let mut obs = healthy();
            tweak(&mut obs);
            let s = node_status(
                &c,
                "10.0.0.5".parse().unwrap(),
                &machine(),
                &obs,
                None,
                ts(1000),
            );
            let got: Vec<String> = conditions(&s).into_iter().map(|c| c.1).collect();
            assert_eq!(got, want, "{name}");
            let ready = s.conditions.as_ref().unwrap().last().unwrap();
            assert_eq!(ready.message.as_deref(), Some(ready_msg), "{name}");
            let want_reason = if want[3] == "True" {
                "KubeletReady"
            } else {
                "KubeletNotReady"
            };
            assert_eq!(ready.reason.as_deref(), Some(want_reason), "{name}");
        }
    }

    #[test]
    fn status_carries_addresses_info_endpoint_and_condition_reasons() {
        let c = config(&["--node-ip", "10.0.0.5", "--port", "10260"]);
        let s = node_status(
            &c,
            "10.0.0.5".parse().unwrap(),
            &machine(),
            &healthy(),
            None,
            ts(1000),
        );
        let addrs: Vec<_> = s
            .addresses
            .iter()
            .flatten()
            .map(|a| (a.type_.as_str(), a.address.as_str()))
            .collect();
        assert_eq!(addrs, [("InternalIP", "10.0.0.5"), ("Hostname", "node-a")]);
        let info = s.node_info.as_ref().unwrap();
        assert_eq!(info.kubelet_version, KUBELET_VERSION);
        assert_eq!(info.container_runtime_version, "containerd://1.6.20");
        assert_eq!(info.os_image, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(info.operating_system, "linux");
        assert_eq!(info.architecture, go_arch());
        assert_eq!(info.machine_id, "mid");
        assert_eq!(
            s.daemon_endpoints
                .as_ref()
                .unwrap()
                .kubelet_endpoint
                .as_ref()
                .unwrap()
                .port,
            10260
        );
        let reasons: Vec<_> = conditions(&s).into_iter().map(|c| c.2).collect();
        assert_eq!(
            reasons,
            [
                "KubeletHasSufficientMemory",
                "KubeletHasNoDiskPressure",
                "KubeletHasSufficientPID",
                "KubeletReady"
            ]
        );
    }

    #[test]
    fn transition_times_hold_while_status_holds_and_only_heartbeats_do_not_count_as_change() {
        let c = config(&[]);
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let first = node_status(&c, ip, &machine(), &healthy(), None, ts(1000));
        let second = node_status(&c, ip, &machine(), &healthy(), Some(&first), ts(1010));
        let ready = |s: &NodeStatus| s.conditions.as_ref().unwrap()[3].clone();
        assert_eq!(ready(&second).last_transition_time, Some(Time(ts(1000))));
        assert_eq!(ready(&second).last_heartbeat_time, Some(Time(ts(1010))));
        assert!(!status_changed(Some(&first), &second));

        let mut down = healthy();
        down.runtime_conditions = Err("gone".into());
        let third = node_status(&c, ip, &machine(), &down, Some(&second), ts(1020));
        assert_eq!(ready(&third).last_transition_time, Some(Time(ts(1020))));
        assert!(status_changed(Some(&second), &third));

        // Foreign conditions and extra resources on the stored status do not count.
        let mut stored = second.clone();
        stored.conditions.as_mut().unwrap().push(NodeCondition {
            type_: "KernelDeadlock".into(),
            status: "False".into(),
            ..Default::default()
        });
        stored
            .capacity
            .as_mut()
            .unwrap()
            .insert("example.com/gpu".into(), Quantity("1".into()));
        assert!(!status_changed(Some(&stored), &second));
        assert!(status_changed(None, &second));

        let mut imgs = healthy();
        imgs.images = Some(vec![v1::Image {
            id: "sha256:1".into(),
            repo_tags: vec!["busybox:latest".into()],
            size: 5,
            ..Default::default()
        }]);
        let fourth = node_status(&c, ip, &machine(), &imgs, Some(&second), ts(1030));
        assert!(status_changed(Some(&second), &fourth));
        // A failed image listing keeps the previous list rather than flapping.
        let mut no_list = healthy();
        no_list.images = None;
        let fifth = node_status(&c, ip, &machine(), &no_list, Some(&fourth), ts(1040));
        assert_eq!(fifth.images, fourth.images);
    }

    #[test]
    fn condition_changes_become_node_events() {
        let c = config(&[]);
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let mut no_net = healthy();
        no_net.runtime_conditions = Ok(vec![
            cond("RuntimeReady", true),
            cond("NetworkReady", false),
        ]);
        let first = node_status(&c, ip, &machine(), &no_net, None, ts(1));
        let reasons =
            |v: Vec<(EventType, &str)>| v.into_iter().map(|e| e.1.to_string()).collect::<Vec<_>>();
        assert_eq!(
            reasons(condition_events(None, &first)),
            [
                "NodeHasSufficientMemory",
                "NodeHasNoDiskPressure",
                "NodeHasSufficientPID",
                "NodeNotReady"
            ]
        );
        let second = node_status(&c, ip, &machine(), &healthy(), Some(&first), ts(2));
        assert_eq!(
            reasons(condition_events(Some(&first), &second)),
            ["NodeReady"]
        );
        assert!(condition_events(Some(&second), &second).is_empty());
    }

    #[test]
    fn images_are_the_largest_fifty_with_digests_first() {
        let mut images: Vec<v1::Image> = (0..60)
            .map(|i| v1::Image {
                id: format!("sha256:{i:02}"),
                repo_tags: vec![format!("img{i}:latest")],
                repo_digests: vec![format!("img{i}@sha256:{i}")],
                size: i as u64,
                ..Default::default()
            })
            .collect();
        images[0].repo_tags = (0..7).map(|t| format!("many:{t}")).collect();
        images[0].size = 1000;
        let out = status_images(&images);
        assert_eq!(out.len(), 50);
        assert_eq!(out[0].size_bytes, Some(1000));
        assert_eq!(out[0].names.as_ref().unwrap().len(), 5);
        assert_eq!(out[0].names.as_ref().unwrap()[0], "img0@sha256:0");
        assert_eq!(
            out[1].names.as_ref().unwrap(),
            &vec!["img59@sha256:59".to_string(), "img59:latest".to_string()]
        );
        assert_eq!(out[49].size_bytes, Some(11));
    }

    #[test]
    fn node_object_and_reconciliation_keep_others_labels_and_taints() {
        let c = config(&[
            "--node-labels",
            "node-role.kubernetes.io/worker=,zone=a",
            "--register-with-taints",
            "dedicated=gpu:NoSchedule",
        ]);
        let wanted = initial_node(&c, Some("10.244.1.0/24"));
        let labels = wanted.metadata.labels.clone().unwrap();
        assert_eq!(labels[LABEL_HOSTNAME], "node-a");
        assert_eq!(labels[LABEL_OS], "linux");
        assert_eq!(labels[LABEL_BETA_ARCH], go_arch());
        assert_eq!(labels["node-role.kubernetes.io/worker"], "");
        let spec = wanted.spec.clone().unwrap();
        assert_eq!(spec.taints.unwrap()[0].key, "dedicated");
        assert_eq!(spec.pod_cidr.as_deref(), Some("10.244.1.0/24"));

        assert!(reconcile_node(&wanted, &wanted).is_none());

        let existing: Node = serde_json::from_value(json!({
            "metadata": {"name": "node-a", "labels": {"zone": "b", "custom": "x"}},
            "spec": {"taints": [
                {"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"},
                {"key": "dedicated", "value": "cpu", "effect": "NoSchedule"}
            ]}
        }))
        .unwrap();
        let updated = reconcile_node(&existing, &wanted).unwrap();
        let l = updated.metadata.labels.as_ref().unwrap();
        assert_eq!(l["zone"], "a");
        assert_eq!(l["custom"], "x");
        assert_eq!(l[LABEL_HOSTNAME], "node-a");
        assert_eq!(
            updated.metadata.annotations.as_ref().unwrap()[ANNOTATION_CONTROLLER_MANAGED_ATTACH],
            "true"
        );
        let taints: Vec<_> = updated
            .spec
            .as_ref()
            .unwrap()
            .taints
            .iter()
            .flatten()
            .map(|t| (t.key.as_str(), t.value.as_deref()))
            .collect();
        assert_eq!(
            taints,
            [
                ("node.kubernetes.io/not-ready", None),
                ("dedicated", Some("gpu"))
            ]
        );
        assert!(reconcile_node(&updated, &wanted).is_none());
    }

    #[test]
    fn pod_cidr_prefers_the_nodes_spec() {
        let n: Node =
            serde_json::from_value(json!({"metadata": {}, "spec": {"podCIDR": "10.244.7.0/24"}}))
                .unwrap();
        let empty: Node = serde_json::from_value(json!({"metadata": {}, "spec": {}})).unwrap();
        assert_eq!(
            effective_pod_cidr(Some(&n), Some("10.9.0.0/24")).as_deref(),
            Some("10.244.7.0/24")
        );
        assert_eq!(
            effective_pod_cidr(Some(&empty), Some("10.9.0.0/24")).as_deref(),
            Some("10.9.0.0/24")
        );
        assert_eq!(effective_pod_cidr(Some(&empty), None), None);
    }

    #[test]
    fn lease_carries_holder_duration_owner_and_micro_time() {
        let c = config(&["--node-lease-duration-seconds", "30"]);
        let l = lease_object(
            &c,
            Some("uid-1"),
            Timestamp::from_microsecond(1_700_000_000_123_456).unwrap(),
        );
        assert_eq!(l["metadata"]["namespace"], LEASE_NAMESPACE);
        assert_eq!(l["spec"]["holderIdentity"], "node-a");
        assert_eq!(l["spec"]["leaseDurationSeconds"], 30);
        assert_eq!(l["spec"]["renewTime"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(l["metadata"]["ownerReferences"][0]["kind"], "Node");
        assert_eq!(l["metadata"]["ownerReferences"][0]["uid"], "uid-1");
        let _: Lease = serde_json::from_value(l).unwrap();
        assert!(lease_object(&c, None, Timestamp::now())["metadata"]
            .get("ownerReferences")
            .is_none());
    }

    #[test]
    fn machine_files_parse() {
        let m = parse_meminfo(
            "MemTotal:       24575088 kB\nMemAvailable:   100 kB\nHugePages_Total: 0\n",
        );
        assert_eq!(m["MemTotal"], 24575088 * 1024);
        assert_eq!(m["MemAvailable"], 102400);
        assert_eq!(m["HugePages_Total"], 0);
        assert_eq!(
            parse_os_release("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(parse_os_release(""), "Linux");
        assert_eq!(parse_cpu_list("0-1"), Some(2));
        assert_eq!(parse_cpu_list("0-3,5,7-8"), Some(7));
        assert_eq!(parse_cpu_list("x"), None);
        let routes =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(
            parse_route_target(routes),
            Some(("eth0".into(), Ipv4Addr::new(192, 0, 2, 1)))
        );
        let no_default = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n\
            veth1\t00C8000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\n";
        assert_eq!(
            parse_route_target(no_default),
            Some(("veth1".into(), Ipv4Addr::new(10, 0, 200, 1)))
        );
        assert_eq!(parse_route_target("Iface\n"), None);
    }

    #[test]
    fn runtime_versions_read_like_upstream() {
        let v = |name: &str, ver: &str| v1::VersionResponse {
            runtime_name: name.into(),
            runtime_version: ver.into(),
            ..Default::default()
        };
        assert_eq!(
            runtime_version_string(&v("containerd", "1.6.20~ds1")),
            "containerd://1.6.20"
        );
        assert_eq!(
            runtime_version_string(&v("containerd", "v1.7.2")),
            "containerd://1.7.2"
        );
        assert_eq!(
            runtime_version_string(&v("containerd", "2.0.0-rc.1")),
            "containerd://2.0.0-rc.1"
        );
    }

    #[tokio::test]
    async fn fake_runtime_observation_makes_a_ready_node_with_images() {
        let rt = FakeRuntime::new().with_images(&["docker.io/library/busybox:latest"]);
        let mut obs = healthy();
        observe_runtime(&rt, &mut obs).await;
        assert_eq!(obs.runtime_version.as_deref(), Some("fake://0.0.1"));
        let s = node_status(
            &config(&[]),
            "10.0.0.5".parse().unwrap(),
            &machine(),
            &obs,
            None,
            ts(5),
        );
        assert!(is_ready(Some(&s)));
        let names = s.images.unwrap()[0].names.clone().unwrap();
        assert_eq!(names, ["docker.io/library/busybox:latest"]);
    }

    #[test]
    fn machine_info_reads_this_machine() {
        let m = MachineInfo::read();
        assert!(m.num_cpus >= 1);
        assert!(m.memory_capacity > 0);
        assert!(!m.kernel_version.is_empty());
        assert!(fs_stats(Path::new("/")).is_some_and(|f| f.capacity_bytes > 0));
        assert!(fs_stats(Path::new("/nonexistent/deeper")).is_some());
    }
}
