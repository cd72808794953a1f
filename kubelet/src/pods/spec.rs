//! Pod spec → CRI configuration: the sandbox (hostname, DNS, port mappings, cgroup parent,
//! namespaces, sysctls) and each container (command and args with `$(VAR)` expansion, env,
//! mounts, resources, security context, log path), as upstream's `kuberuntime` builds them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use super::env::ConfigError;
use crate::cgroups;
use crate::cri::{labels, v1};
use crate::volumes::HostVolume;
use crate::Config;

/// Upstream's default masked and read-only paths for unprivileged containers.
const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

pub fn uid(pod: &Pod) -> &str {
    pod.metadata.uid.as_deref().unwrap_or("")
}
pub fn name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}
pub fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// `<pod-log-dir>/<namespace>_<name>_<uid>`.
pub fn pod_log_dir(cfg: &Config, pod: &Pod) -> PathBuf {
    cfg.pod_log_dir
        .join(format!("{}_{}_{}", namespace(pod), name(pod), uid(pod)))
}

/// `<root-dir>/pods/<uid>`.
pub fn pod_dir(cfg: &Config, uid: &str) -> PathBuf {
    cfg.root_dir.join("pods").join(uid)
}

pub fn host_network(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false)
}

/// A stable hash of the parts of a container spec whose change requires a restart (all but
/// resources, which are resized in place upstream).
pub fn container_hash(c: &Container) -> String {
    let mut c = c.clone();
    c.resources = None;
    let bytes = serde_json::to_vec(&c).unwrap_or_default();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// A parsed resolv.conf.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl ResolvConf {
    pub fn parse(text: &str) -> Self {
        let mut r = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut f = line.split_whitespace();
            match f.next() {
                Some("nameserver") => r.servers.extend(f.next().map(str::to_string)),
                Some("search") | Some("domain") => {
                    r.searches = f.map(str::to_string).collect();
                }
                Some("options") => r.options.extend(f.map(str::to_string)),
                _ => {}
            }
        }
        r
    }
}

fn merge_options(base: &mut Vec<String>, extra: &[(String, Option<String>)]) {
    for (name, value) in extra {
        base.retain(|o| o.split(':').next() != Some(name.as_str()));
        base.push(match value {
            Some(v) => format!("{name}:{v}"),
            None => name.clone(),
        });
    }
}

/// The sandbox's DNS configuration for the pod's dnsPolicy (upstream `GetPodDNS`).
pub fn dns_config(pod: &Pod, cfg: &Config, host: &ResolvConf) -> v1::DnsConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut policy = spec
        .dns_policy
        .clone()
        .unwrap_or_else(|| "ClusterFirst".into());
    let host_net = spec.host_network.unwrap_or(false);
    if policy == "ClusterFirst" && host_net {
        policy = "Default".into();
    }
    if policy == "ClusterFirstWithHostNet" {
        policy = "ClusterFirst".into();
    }
    if policy == "ClusterFirst" && cfg.cluster_dns.is_empty() {
        policy = "Default".into();
    }
    let mut d = match policy.as_str() {
        "ClusterFirst" => {
            let domain = &cfg.cluster_domain;
            let mut searches = vec![
                format!("{}.svc.{domain}", namespace(pod)),
                format!("svc.{domain}"),
                domain.clone(),
            ];
            searches.extend(host.searches.iter().cloned());
            v1::DnsConfig {
                servers: cfg.cluster_dns.iter().map(|i| i.to_string()).collect(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        "None" => v1::DnsConfig::default(),
        _ => v1::DnsConfig {
            servers: host.servers.clone(),
            searches: host.searches.clone(),
            options: host.options.clone(),
        },
    };
    if let Some(extra) = spec.dns_config {
        for s in extra.nameservers.iter().flatten() {
            if !d.servers.contains(s) {
                d.servers.push(s.clone());
            }
        }
        for s in extra.searches.iter().flatten() {
            if !d.searches.contains(s) {
                d.searches.push(s.clone());
            }
        }
        let opts: Vec<(String, Option<String>)> = extra
            .options
            .iter()
            .flatten()
            .filter_map(|o| o.name.clone().map(|n| (n, o.value.clone())))
            .collect();
        merge_options(&mut d.options, &opts);
    }
    // resolv.conf limits: 3 servers, 32 search domains.
    d.servers.truncate(3);
    d.searches.truncate(32);
    d
}

/// The pod's hostname (spec.hostname or the pod name, at most 63 characters).
pub fn hostname(pod: &Pod) -> String {
    let spec = pod.spec.as_ref();
    let mut h = spec
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| name(pod).to_string());
    if h.len() > 63 {
        h.truncate(63);
        h = h.trim_end_matches(['-', '.']).to_string();
    }
    h
}

fn namespace_options(pod: &Pod) -> v1::NamespaceOption {
    let spec = pod.spec.clone().unwrap_or_default();
    let mode = |node: bool, other: v1::NamespaceMode| {
        if node {
            v1::NamespaceMode::Node as i32
        } else {
            other as i32
        }
    };
    v1::NamespaceOption {
        network: mode(spec.host_network.unwrap_or(false), v1::NamespaceMode::Pod),
        pid: mode(
            spec.host_pid.unwrap_or(false),
            if spec.share_process_namespace.unwrap_or(false) {
                v1::NamespaceMode::Pod
            } else {
                v1::NamespaceMode::Container
            },
        ),
        ipc: mode(spec.host_ipc.unwrap_or(false), v1::NamespaceMode::Pod),
        target_id: String::new(),
    }
}

fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    l.insert(labels::POD_NAME.into(), name(pod).into());
    l.insert(labels::POD_NAMESPACE.into(), namespace(pod).into());
    l.insert(labels::POD_UID.into(), uid(pod).into());
    l.insert(labels::KUBELET_MANAGED.into(), "true".into());
    l
}

/// The sandbox configuration.
pub fn sandbox_config(
    pod: &Pod,
    attempt: u32,
    cfg: &Config,
    host_dns: &ResolvConf,
) -> v1::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let qos = cgroups::qos_class(&spec);
    let host_net = spec.host_network.unwrap_or(false);
    let mut port_mappings = Vec::new();
    for c in &spec.containers {
        for p in c.ports.iter().flatten() {
            let Some(hp) = p.host_port.filter(|hp| *hp > 0) else {
                continue;
            };
            port_mappings.push(v1::PortMapping {
                protocol: match p.protocol.as_deref() {
                    Some("UDP") => v1::Protocol::Udp as i32,
                    Some("SCTP") => v1::Protocol::Sctp as i32,
                    _ => v1::Protocol::Tcp as i32,
                },
                container_port: p.container_port,
                host_port: hp,
                host_ip: p.host_ip.clone().unwrap_or_default(),
            });
        }
    }
    let psc = spec.security_context.clone().unwrap_or_default();
    let privileged = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| {
            c.security_context
                .as_ref()
                .and_then(|s| s.privileged)
                .unwrap_or(false)
        });
    let mut groups: Vec<i64> = psc.supplemental_groups.clone().unwrap_or_default();
    if let Some(fs) = psc.fs_group {
        groups.push(fs);
    }
    v1::PodSandboxConfig {
        metadata: Some(v1::PodSandboxMetadata {
            name: name(pod).into(),
            uid: uid(pod).into(),
            namespace: namespace(pod).into(),
            attempt,
        }),
        hostname: if host_net {
            String::new()
        } else {
            hostname(pod)
        },
        log_directory: pod_log_dir(cfg, pod).to_string_lossy().into(),
        dns_config: Some(dns_config(pod, cfg, host_dns)),
        port_mappings,
        labels: pod_labels(pod),
        annotations: pod
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        linux: Some(v1::LinuxPodSandboxConfig {
            cgroup_parent: cgroups::pod_cgroup_parent(&cfg.cgroup_root, qos, uid(pod)),
            security_context: Some(v1::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                run_as_user: psc.run_as_user.map(|value| v1::Int64Value { value }),
                run_as_group: psc.run_as_group.map(|value| v1::Int64Value { value }),
                supplemental_groups: groups,
                privileged,
                ..Default::default()
            }),
            sysctls: psc
                .sysctls
                .iter()
                .flatten()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect(),
            ..Default::default()
        }),
    }
}

/// The kubelet-managed /etc/hosts of a pod (upstream `managedHostsFileContent`).
pub fn hosts_file(pod: &Pod, pod_ips: &[String], cluster_domain: &str) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let host = hostname(pod);
    for ip in pod_ips {
        match spec.subdomain.as_deref().filter(|d| !d.is_empty()) {
            Some(sub) => s.push_str(&format!(
                "{ip}\t{host}.{sub}.{}.svc.{cluster_domain}\t{host}\n",
                namespace(pod)
            )),
            None => s.push_str(&format!("{ip}\t{host}\n")),
        }
    }
    if let Some(aliases) = spec.host_aliases.filter(|a| !a.is_empty()) {
        s.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            let names = a.hostnames.unwrap_or_default().join("\t");
            s.push_str(&format!("{}\t{names}\n", a.ip));
        }
    }
    s
}

/// Mounts of a container: its volumeMounts onto the prepared volumes (with subPath), the
/// managed /etc/hosts and the termination message file.
pub fn mounts(
    pod: &Pod,
    c: &Container,
    volumes: &HashMap<String, HostVolume>,
    hosts_file: Option<&Path>,
    termination_file: Option<&Path>,
) -> Result<Vec<v1::Mount>, ConfigError> {
    let mut out = Vec::new();
    for vm in c.volume_mounts.iter().flatten() {
        let vol = volumes.get(&vm.name).ok_or_else(|| {
            ConfigError(format!(
                "cannot find volume {:?} to mount into container {:?}",
                vm.name, c.name
            ))
        })?;
        let mut host = vol.host_path.clone();
        if let Some(sub) = vm.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                return Err(ConfigError(format!(
                    "failed to prepare subPath for volumeMount {:?} of container {:?}",
                    vm.name, c.name
                )));
            }
            host = host.join(sub);
            if !host.exists() {
                std::fs::create_dir_all(&host).map_err(|e| {
                    ConfigError(format!("failed to create subPath directory for volumeMount {:?} of container {:?}: {e}", vm.name, c.name))
                })?;
            }
        }
        out.push(v1::Mount {
            container_path: vm.mount_path.clone(),
            host_path: host.to_string_lossy().into(),
            readonly: vm.read_only.unwrap_or(false) || vol.read_only,
            selinux_relabel: false,
            propagation: match vm.mount_propagation.as_deref() {
                Some("HostToContainer") => v1::MountPropagation::PropagationHostToContainer as i32,
                Some("Bidirectional") => v1::MountPropagation::PropagationBidirectional as i32,
                _ => v1::MountPropagation::PropagationPrivate as i32,
            },
        });
    }
    let mounted = |out: &[v1::Mount], p: &str| out.iter().any(|m| m.container_path == p);
    if let Some(h) = hosts_file {
        if !host_network(pod) && !mounted(&out, "/etc/hosts") {
            out.push(v1::Mount {
                container_path: "/etc/hosts".into(),
                host_path: h.to_string_lossy().into(),
                ..Default::default()
            });
        }
    }
    if let Some(t) = termination_file {
        let path = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        if !mounted(&out, &path) {
            out.push(v1::Mount {
                container_path: path,
                host_path: t.to_string_lossy().into(),
                ..Default::default()
            });
        }
    }
    Ok(out)
}

/// Everything a container config needs besides the spec.
pub struct ContainerParams {
    pub restart_count: i32,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<v1::Mount>,
    pub image_ref: String,
    pub memory_capacity: i64,
}

/// The container configuration.
pub fn container_config(pod: &Pod, c: &Container, p: ContainerParams) -> v1::ContainerConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let qos = cgroups::qos_class(&spec);
    let env_map: HashMap<String, String> = p.env.iter().cloned().collect();
    let command: Vec<String> = c
        .command
        .iter()
        .flatten()
        .map(|s| super::env::expand(s, &env_map))
        .collect();
    let args: Vec<String> = c
        .args
        .iter()
        .flatten()
        .map(|s| super::env::expand(s, &env_map))
        .collect();
    let psc = spec.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged.unwrap_or(false);
    let unmasked = sc.proc_mount.as_deref() == Some("Unmasked");
    let mut groups: Vec<i64> = psc.supplemental_groups.clone().unwrap_or_default();
    if let Some(fs) = psc.fs_group {
        groups.push(fs);
    }
    let caps = sc.capabilities.clone().unwrap_or_default();
    let resources = v1::LinuxContainerResources {
        cpu_period: if cgroups::limit(c, "cpu").is_some() {
            cgroups::CPU_PERIOD
        } else {
            0
        },
        cpu_quota: cgroups::cpu_quota(cgroups::limit(c, "cpu")),
        cpu_shares: cgroups::cpu_shares(cgroups::request(c, "cpu")),
        memory_limit_in_bytes: cgroups::limit(c, "memory").unwrap_or(0),
        oom_score_adj: cgroups::oom_score_adj(qos, c, p.memory_capacity),
        ..Default::default()
    };
    let grace = spec.termination_grace_period_seconds.unwrap_or(30);
    let mut annotations: HashMap<String, String> = HashMap::new();
    annotations.insert(labels::CONTAINER_HASH.into(), container_hash(c));
    annotations.insert(labels::RESTART_COUNT.into(), p.restart_count.to_string());
    annotations.insert(
        labels::TERMINATION_MESSAGE_PATH.into(),
        c.termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into()),
    );
    annotations.insert(
        labels::TERMINATION_MESSAGE_POLICY.into(),
        c.termination_message_policy
            .clone()
            .unwrap_or_else(|| "File".into()),
    );
    annotations.insert(labels::POD_GRACE_PERIOD.into(), grace.to_string());
    let mut l: HashMap<String, String> = HashMap::new();
    l.insert(labels::POD_NAME.into(), name(pod).into());
    l.insert(labels::POD_NAMESPACE.into(), namespace(pod).into());
    l.insert(labels::POD_UID.into(), uid(pod).into());
    l.insert(labels::CONTAINER_NAME.into(), c.name.clone());
    l.insert(labels::KUBELET_MANAGED.into(), "true".into());
    v1::ContainerConfig {
        metadata: Some(v1::ContainerMetadata {
            name: c.name.clone(),
            attempt: p.restart_count.max(0) as u32,
        }),
        image: Some(v1::ImageSpec {
            image: if p.image_ref.is_empty() {
                c.image.clone().unwrap_or_default()
            } else {
                p.image_ref.clone()
            },
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command,
        args,
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: p
            .env
            .into_iter()
            .map(|(key, value)| v1::KeyValue { key, value })
            .collect(),
        mounts: p.mounts,
        devices: vec![],
        labels: l,
        annotations,
        log_path: format!("{}/{}.log", c.name, p.restart_count),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(v1::LinuxContainerConfig {
            resources: Some(resources),
            security_context: Some(v1::LinuxContainerSecurityContext {
                capabilities: Some(v1::Capability {
                    add_capabilities: caps.add.unwrap_or_default(),
                    drop_capabilities: caps.drop.unwrap_or_default(),
                }),
                privileged,
                namespace_options: Some(namespace_options(pod)),
                run_as_user: sc
                    .run_as_user
                    .or(psc.run_as_user)
                    .map(|value| v1::Int64Value { value }),
                run_as_group: sc
                    .run_as_group
                    .or(psc.run_as_group)
                    .map(|value| v1::Int64Value { value }),
                readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
                supplemental_groups: groups,
                no_new_privs: sc.allow_privilege_escalation == Some(false),
                masked_paths: if privileged || unmasked {
                    vec![]
                } else {
                    MASKED_PATHS.iter().map(|s| s.to_string()).collect()
                },
                readonly_paths: if privileged || unmasked {
                    vec![]
                } else {
                    READONLY_PATHS.iter().map(|s| s.to_string()).collect()
                },
                ..Default::default()
            }),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use k8s_openapi::api::core::v1::{
        ContainerPort, PodDNSConfig, PodDNSConfigOption, PodSpec, ResourceRequirements, VolumeMount,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cfg(dns: &[&str]) -> Config {
        let mut argv = vec!["kubelet", "--hostname-override", "n1"];
        let joined = dns.join(",");
        if !dns.is_empty() {
            argv.extend(["--cluster-dns", joined.as_str()]);
        }
        Config::try_from(crate::Args::parse_from(argv)).unwrap()
    }

    fn pod(spec: PodSpec) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("web-0".into()),
                namespace: Some("shop".into()),
                uid: Some("u-1".into()),
                ..Default::default()
            },
            spec: Some(spec),
            ..Default::default()
        }
    }

    fn container() -> Container {
        Container {
            name: "app".into(),
            image: Some("nginx".into()),
            ..Default::default()
        }
    }

    #[test]
    fn dns_policies() {
        let host = ResolvConf::parse("nameserver 1.1.1.1\nsearch corp.example\noptions edns0\n");
        let c = cfg(&["10.96.0.10"]);
        let p = pod(PodSpec::default());
        let d = dns_config(&p, &c, &host);
        assert_eq!(d.servers, vec!["10.96.0.10"]);
        assert_eq!(
            d.searches,
            vec![
                "shop.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(d.options, vec!["ndots:5"]);

        let hostnet = pod(PodSpec {
            host_network: Some(true),
            ..Default::default()
        });
        assert_eq!(dns_config(&hostnet, &c, &host).servers, vec!["1.1.1.1"]);

        let none = pod(PodSpec {
            dns_policy: Some("None".into()),
            dns_config: Some(PodDNSConfig {
                nameservers: Some(vec!["8.8.8.8".into()]),
                searches: Some(vec!["a.b".into()]),
                options: Some(vec![PodDNSConfigOption {
                    name: Some("ndots".into()),
                    value: Some("2".into()),
                }]),
            }),
            ..Default::default()
        });
        let d = dns_config(&none, &c, &host);
        assert_eq!(
            (d.servers, d.searches, d.options),
            (
                vec!["8.8.8.8".to_string()],
                vec!["a.b".to_string()],
                vec!["ndots:2".to_string()]
            )
        );

        // No cluster DNS configured: ClusterFirst falls back to the host's resolv.conf.
        assert_eq!(dns_config(&p, &cfg(&[]), &host).servers, vec!["1.1.1.1"]);
    }

    #[test]
    fn sandbox_has_ports_cgroup_and_labels() {
        let mut c = container();
        c.ports = Some(vec![ContainerPort {
            container_port: 80,
            host_port: Some(8080),
            ..Default::default()
        }]);
        let p = pod(PodSpec {
            containers: vec![c],
            ..Default::default()
        });
        let s = sandbox_config(&p, 1, &cfg(&["10.96.0.10"]), &ResolvConf::default());
        assert_eq!(s.hostname, "web-0");
        assert_eq!(s.port_mappings[0].host_port, 8080);
        assert_eq!(s.labels[labels::POD_UID], "u-1");
        assert_eq!(s.metadata.unwrap().attempt, 1);
        assert!(s.log_directory.ends_with("/var/log/pods/shop_web-0_u-1"));
        let linux = s.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/kubepods/besteffort/podu-1");
        let ns = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!(ns.network, v1::NamespaceMode::Pod as i32);
        assert_eq!(ns.pid, v1::NamespaceMode::Container as i32);
    }

    #[test]
    fn container_command_env_resources() {
        let mut c = container();
        c.command = Some(vec!["sh".into(), "-c".into()]);
        c.args = Some(vec!["echo $(GREETING) $$(HOME)".into()]);
        c.resources = Some(ResourceRequirements {
            limits: Some(
                [
                    ("cpu".to_string(), Quantity("500m".into())),
                    ("memory".to_string(), Quantity("64Mi".into())),
                ]
                .into(),
            ),
            ..Default::default()
        });
        let p = pod(PodSpec {
            containers: vec![c.clone()],
            ..Default::default()
        });
        let cc = container_config(
            &p,
            &c,
            ContainerParams {
                restart_count: 2,
                env: vec![("GREETING".into(), "hi".into())],
                mounts: vec![],
                image_ref: "sha256:abc".into(),
                memory_capacity: 1 << 30,
            },
        );
        assert_eq!(cc.command, vec!["sh", "-c"]);
        assert_eq!(cc.args, vec!["echo hi $(HOME)"]);
        assert_eq!(cc.log_path, "app/2.log");
        assert_eq!(cc.annotations[labels::RESTART_COUNT], "2");
        assert_eq!(cc.image.as_ref().unwrap().image, "sha256:abc");
        let r = cc.linux.as_ref().unwrap().resources.as_ref().unwrap();
        assert_eq!(
            (r.cpu_quota, r.cpu_period, r.cpu_shares),
            (50_000, 100_000, 512)
        );
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert_eq!(
            r.oom_score_adj, -997,
            "limits only: requests default to limits → Guaranteed"
        );
        let sc = cc.linux.unwrap().security_context.unwrap();
        assert!(sc.masked_paths.contains(&"/proc/kcore".to_string()));
    }

    #[test]
    fn mounts_map_volumes_subpaths_and_managed_files() {
        let d = tempfile::tempdir().unwrap();
        let mut c = container();
        c.volume_mounts = Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: "/data".into(),
                sub_path: Some("sub".into()),
                ..Default::default()
            },
            VolumeMount {
                name: "cfg".into(),
                mount_path: "/etc/cfg".into(),
                ..Default::default()
            },
        ]);
        let p = pod(PodSpec {
            containers: vec![c.clone()],
            ..Default::default()
        });
        let vols: HashMap<String, HostVolume> = [
            (
                "data".to_string(),
                HostVolume {
                    host_path: d.path().join("data"),
                    read_only: false,
                },
            ),
            (
                "cfg".to_string(),
                HostVolume {
                    host_path: d.path().join("cfg"),
                    read_only: true,
                },
            ),
        ]
        .into();
        let hosts = d.path().join("etc-hosts");
        let term = d.path().join("term");
        let m = mounts(&p, &c, &vols, Some(&hosts), Some(&term)).unwrap();
        assert_eq!(m.len(), 4);
        assert!(m[0].host_path.ends_with("data/sub"));
        assert!(d.path().join("data/sub").is_dir());
        assert!(m[1].readonly);
        assert_eq!(m[2].container_path, "/etc/hosts");
        assert_eq!(m[3].container_path, "/dev/termination-log");

        let mut bad = c.clone();
        bad.volume_mounts.as_mut().unwrap()[0].sub_path = Some("../escape".into());
        assert!(mounts(&p, &bad, &vols, None, None).is_err());
    }

    #[test]
    fn hosts_file_names_the_pod() {
        let p = pod(PodSpec {
            hostname: Some("web-0".into()),
            subdomain: Some("web".into()),
            ..Default::default()
        });
        let h = hosts_file(&p, &["10.244.0.5".into()], "cluster.local");
        assert!(h.contains("10.244.0.5\tweb-0.web.shop.svc.cluster.local\tweb-0\n"));
        assert!(h.starts_with("# Kubernetes-managed hosts file."));
    }

    #[test]
    fn hash_ignores_resources_only() {
        let a = container();
        let mut b = a.clone();
        b.resources = Some(ResourceRequirements::default());
        assert_eq!(container_hash(&a), container_hash(&b));
        b.image = Some("nginx:2".into());
        assert_ne!(container_hash(&a), container_hash(&b));
    }
}
