//! The kubelet's flags ([`Args`], upstream's names where they exist) and the validated
//! [`Config`] built from them without any IO.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;

/// Command-line flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "kubelet",
    about = "Registers this node and runs the pods bound to it through a CRI runtime."
)]
pub struct Args {
    /// Kubeconfig to reach the API server (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Node name to use instead of the hostname.
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// IP address of the node (default: the address of the interface with the default route).
    #[arg(long)]
    pub node_ip: Option<IpAddr>,
    /// Labels to add when registering the node, `key=value,...`
    /// (e.g. `node-role.kubernetes.io/control-plane=`).
    #[arg(long, default_value = "")]
    pub node_labels: String,
    /// Taints to register the node with, `key=value:Effect,...`.
    #[arg(long, default_value = "")]
    pub register_with_taints: String,
    /// CRI endpoint of the container runtime.
    #[arg(long, default_value = "unix:///run/containerd/containerd.sock")]
    pub container_runtime_endpoint: String,
    /// Directory for the kubelet's files (pod volumes, PKI, state).
    #[arg(long, default_value = "/var/lib/kubelet")]
    pub root_dir: PathBuf,
    /// Directory for container logs (`<ns>_<pod>_<uid>/<container>/<attempt>.log`).
    #[arg(long, default_value = "/var/log/pods")]
    pub pod_log_dir: PathBuf,
    /// Directory of OCI/docker image archives to import into the runtime at start (air-gapped
    /// nodes).
    #[arg(long)]
    pub image_dir: Option<PathBuf>,
    /// `ctr` binary used to import image archives.
    #[arg(long, default_value = "ctr")]
    pub ctr_path: PathBuf,
    /// Cluster DNS server addresses given to pods with dnsPolicy ClusterFirst, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub cluster_dns: Vec<IpAddr>,
    /// Cluster domain appended to search paths.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// resolv.conf that dnsPolicy Default (and ClusterFirst's fallback) uses.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Address of the kubelet's HTTPS server.
    #[arg(long, default_value = "0.0.0.0")]
    pub address: IpAddr,
    /// Port of the kubelet's HTTPS server (logs, exec, stats).
    #[arg(long, default_value_t = 10250)]
    pub port: u16,
    /// Address of the plain-HTTP /healthz endpoint.
    #[arg(long, default_value = "127.0.0.1")]
    pub healthz_bind_address: IpAddr,
    /// Port of the plain-HTTP /healthz endpoint (0 disables).
    #[arg(long, default_value_t = 10248)]
    pub healthz_port: u16,
    /// Serving certificate (PEM); a self-signed one is made under --root-dir/pki when unset.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// Serving key (PEM).
    #[arg(long)]
    pub tls_private_key_file: Option<PathBuf>,
    /// CA bundle that verifies client certificates (the API server's kubelet-client cert).
    /// Without it, only the health endpoints are served without authentication and every other
    /// request is refused.
    #[arg(long)]
    pub client_ca_file: Option<PathBuf>,
    /// CNI configuration directory the runtime reads; the kubelet writes the node's bridge
    /// network there from its podCIDR.
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,
    /// Do not write a CNI configuration (bring your own network).
    #[arg(long)]
    pub no_cni_config: bool,
    /// Pod CIDR for a standalone node (normally the controller-manager assigns spec.podCIDR).
    #[arg(long)]
    pub pod_cidr: Option<String>,
    /// Masquerade traffic from pods leaving the pod network: one iptables chain for the node's
    /// podCIDR (`KUBE-POD-MASQ-*` in nat POSTROUTING), not the CNI bridge's per-pod ipMasq.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub pod_masquerade: bool,
    /// Root of the cgroup hierarchy for pods (`/kubepods/...` is created under it).
    #[arg(long, default_value = "/")]
    pub cgroup_root: String,
    /// Maximum number of pods.
    #[arg(long, default_value_t = 110)]
    pub max_pods: i64,
    /// Resources reserved for the system, `cpu=100m,memory=100Mi`.
    #[arg(long, default_value = "")]
    pub system_reserved: String,
    /// Resources reserved for Kubernetes components, `cpu=100m,memory=100Mi`.
    #[arg(long, default_value = "")]
    pub kube_reserved: String,
    /// How often the node's Lease is renewed, and status checked for changes.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub node_status_update_frequency: Duration,
    /// How often unchanged node status is still reported.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub node_status_report_frequency: Duration,
    /// Lease duration in seconds.
    #[arg(long, default_value_t = 40)]
    pub node_lease_duration_seconds: i32,
    /// How often every pod is synced even without changes.
    #[arg(long, default_value = "1m", value_parser = parse_duration)]
    pub sync_frequency: Duration,
    /// How often the runtime is relisted to notice container changes.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub pleg_relist_period: Duration,
    /// Image of pod sandboxes; exempt from image garbage collection.
    #[arg(long, default_value = "registry.k8s.io/pause:3.10")]
    pub pod_infra_container_image: String,
}

/// Parse `10s`, `5m`, `1h`, `500ms` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration {s:?}: unknown unit {unit:?}")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Invalid flags.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--node-labels: {0:?} is not key=value")]
    Label(String),
    #[error(
        "--register-with-taints: {0:?} is not key[=value]:NoSchedule|PreferNoSchedule|NoExecute"
    )]
    Taint(String),
    #[error("--{flag}: {value:?} is not name=quantity (cpu, memory, ephemeral-storage, pid)")]
    Reserved { flag: &'static str, value: String },
    #[error("--tls-cert-file and --tls-private-key-file go together")]
    TlsPair,
    #[error("--max-pods must be positive")]
    MaxPods,
    #[error("node name {0:?} is not a valid DNS subdomain")]
    NodeName(String),
    #[error("--cgroup-root must be an absolute path, got {0:?}")]
    CgroupRoot(String),
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: Option<PathBuf>,
    pub node_name: String,
    pub node_ip: Option<IpAddr>,
    pub node_labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub container_runtime_endpoint: String,
    pub root_dir: PathBuf,
    pub pod_log_dir: PathBuf,
    pub image_dir: Option<PathBuf>,
    pub ctr_path: PathBuf,
    pub cluster_dns: Vec<IpAddr>,
    pub cluster_domain: String,
    pub resolv_conf: PathBuf,
    pub server_address: SocketAddr,
    pub healthz_address: Option<SocketAddr>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_private_key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
    pub cni_conf_dir: Option<PathBuf>,
    pub pod_cidr: Option<String>,
    pub pod_masquerade: bool,
    pub cgroup_root: String,
    pub max_pods: i64,
    /// Sum of system and kube reservations by resource name: `cpu` in millicores, the others
    /// in whole units (bytes, pids).
    pub reserved: BTreeMap<String, i64>,
    pub node_status_update_frequency: Duration,
    pub node_status_report_frequency: Duration,
    pub node_lease_duration_seconds: i32,
    pub sync_frequency: Duration,
    pub pleg_relist_period: Duration,
    pub pod_infra_container_image: String,
}

fn parse_map(s: &str) -> Option<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=')?;
        if k.is_empty() {
            return None;
        }
        m.insert(k.to_string(), v.to_string());
    }
    Some(m)
}

fn parse_taints(s: &str) -> Result<Vec<Taint>, ConfigError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let err = || ConfigError::Taint(part.to_string());
        let (kv, effect) = part.rsplit_once(':').ok_or_else(err)?;
        if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
            return Err(err());
        }
        let (key, value) = match kv.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (kv, None),
        };
        if key.is_empty() {
            return Err(err());
        }
        out.push(Taint {
            key: key.to_string(),
            value,
            effect: effect.to_string(),
            time_added: None,
        });
    }
    Ok(out)
}

fn valid_node_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The machine's hostname, lower-cased as upstream does for node names.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;
    fn try_from(a: Args) -> Result<Self, ConfigError> {
        let node_name = a
            .hostname_override
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_else(hostname);
        if !valid_node_name(&node_name) {
            return Err(ConfigError::NodeName(node_name));
        }
        let node_labels =
            parse_map(&a.node_labels).ok_or_else(|| ConfigError::Label(a.node_labels.clone()))?;
        let taints = parse_taints(&a.register_with_taints)?;
        let mut reserved: BTreeMap<String, i64> = BTreeMap::new();
        for (flag, value) in [
            ("system-reserved", &a.system_reserved),
            ("kube-reserved", &a.kube_reserved),
        ] {
            let m = parse_map(value).ok_or_else(|| ConfigError::Reserved {
                flag,
                value: value.clone(),
            })?;
            for (k, v) in m {
                let bad = || ConfigError::Reserved {
                    flag,
                    value: value.clone(),
                };
                if !matches!(k.as_str(), "cpu" | "memory" | "ephemeral-storage" | "pid") {
                    return Err(bad());
                }
                let q = if k == "cpu" {
                    apimachinery::quantity::milli_value(&v)
                } else {
                    apimachinery::quantity::value(&v)
                }
                .filter(|q| *q >= 0)
                .ok_or_else(bad)?;
                *reserved.entry(k).or_default() += q;
            }
        }
        if a.tls_cert_file.is_some() != a.tls_private_key_file.is_some() {
            return Err(ConfigError::TlsPair);
        }
        if a.max_pods <= 0 {
            return Err(ConfigError::MaxPods);
        }
        if !a.cgroup_root.starts_with('/') {
            return Err(ConfigError::CgroupRoot(a.cgroup_root));
        }
        Ok(Config {
            kubeconfig: a.kubeconfig,
            node_name,
            node_ip: a.node_ip,
            node_labels,
            taints,
            container_runtime_endpoint: a.container_runtime_endpoint,
            root_dir: a.root_dir,
            pod_log_dir: a.pod_log_dir,
            image_dir: a.image_dir,
            ctr_path: a.ctr_path,
            cluster_dns: a.cluster_dns,
            cluster_domain: a.cluster_domain.trim_matches('.').to_string(),
            resolv_conf: a.resolv_conf,
            server_address: SocketAddr::new(a.address, a.port),
            healthz_address: (a.healthz_port != 0)
                .then(|| SocketAddr::new(a.healthz_bind_address, a.healthz_port)),
            tls_cert_file: a.tls_cert_file,
            tls_private_key_file: a.tls_private_key_file,
            client_ca_file: a.client_ca_file,
            cni_conf_dir: (!a.no_cni_config).then_some(a.cni_conf_dir),
            pod_cidr: a.pod_cidr,
            pod_masquerade: a.pod_masquerade,
            cgroup_root: a.cgroup_root,
            max_pods: a.max_pods,
            reserved,
            node_status_update_frequency: a.node_status_update_frequency,
            node_status_report_frequency: a.node_status_report_frequency,
            node_lease_duration_seconds: a.node_lease_duration_seconds,
            sync_frequency: a.sync_frequency,
            pleg_relist_period: a.pleg_relist_period,
            pod_infra_container_image: a.pod_infra_container_image,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn cfg(extra: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["kubelet", "--hostname-override", "Node-1"];
        argv.extend_from_slice(extra);
        Config::try_from(Args::parse_from(argv))
    }

    #[test]
    fn defaults_follow_upstream() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.node_name, "node-1");
        assert_eq!(c.max_pods, 110);
        assert_eq!(c.server_address.port(), 10250);
        assert_eq!(c.node_status_update_frequency, Duration::from_secs(10));
        assert_eq!(c.node_status_report_frequency, Duration::from_secs(300));
        assert_eq!(c.cluster_domain, "cluster.local");
    }

    #[test]
    fn labels_taints_and_reservations_parse() {
        let c = cfg(&[
            "--node-labels",
            "node-role.kubernetes.io/control-plane=,zone=a",
            "--register-with-taints",
            "dedicated=gpu:NoSchedule,spot:NoExecute",
            "--system-reserved",
            "cpu=100m,memory=100Mi",
            "--kube-reserved",
            "cpu=100m",
        ])
        .unwrap();
        assert_eq!(c.node_labels["zone"], "a");
        assert_eq!(c.node_labels["node-role.kubernetes.io/control-plane"], "");
        assert_eq!(c.taints.len(), 2);
        assert_eq!(c.taints[1].key, "spot");
        assert_eq!(c.taints[1].value, None);
        assert_eq!(c.reserved["cpu"], 200);
        assert_eq!(c.reserved["memory"], 100 << 20);
    }

    #[test]
    fn bad_flags_name_the_problem() {
        let cases: &[(&[&str], &str)] = &[
            (&["--node-labels", "novalue"], "--node-labels"),
            (
                &["--register-with-taints", "a=b:Sometimes"],
                "--register-with-taints",
            ),
            (&["--system-reserved", "gpu=1"], "--system-reserved"),
            (&["--max-pods", "0"], "--max-pods"),
            (&["--tls-cert-file", "/x"], "--tls-cert-file"),
            (&["--cgroup-root", "kubepods"], "--cgroup-root"),
        ];
        for (argv, want) in cases {
            let e = cfg(argv).unwrap_err().to_string();
            assert!(e.contains(want), "{argv:?}: {e}");
        }
        let bad = Args::parse_from(["kubelet", "--hostname-override", "bad_name"]);
        assert!(matches!(
            Config::try_from(bad),
            Err(ConfigError::NodeName(_))
        ));
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("3d").is_err());
    }
}
