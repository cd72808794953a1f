//! Command-line flags (upstream kube-controller-manager names and defaults) and the validated
//! [`Config`] built from them without IO.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;

use crate::framework::leader::LeaderElectionConfig;

/// kube-controller-manager: runs the core control loops.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "controller-manager", version)]
pub struct Args {
    /// Path to a kubeconfig with the API server address and credentials (in-cluster or
    /// $KUBECONFIG when omitted).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Controllers to enable: `*` enables the on-by-default ones, `name` enables one, `-name`
    /// disables one (e.g. `*,-nodeipam`).
    #[arg(long, value_delimiter = ',', default_value = "*")]
    pub controllers: Vec<String>,
    /// Take the leader lease before running controllers, so only one instance acts.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub leader_elect: bool,
    /// How long a non-renewed lease stays valid before a standby may take it.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// How long the leader keeps retrying to renew before giving up leadership.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// Interval between attempts to acquire or renew the lease.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
    /// Namespace of the leader Lease.
    #[arg(long, default_value = "kube-system")]
    pub leader_elect_resource_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "kube-controller-manager")]
    pub leader_elect_resource_name: String,
    /// Address /healthz and /metrics listen on (plain HTTP: keep it on loopback).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_address: IpAddr,
    /// Port for /healthz and /metrics (0 picks a free one).
    #[arg(long, default_value_t = 10257)]
    pub secure_port: u16,
    /// CIDR range for pods in the cluster (used by node IPAM; 10.244.0.0/16 when unset).
    #[arg(long)]
    pub cluster_cidr: Option<String>,
    /// Whether node IPAM allocates `spec.podCIDR` to nodes from --cluster-cidr.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub allocate_node_cidrs: bool,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// CIDR range of Service cluster IPs (excluded from pod CIDRs when they overlap).
    #[arg(long)]
    pub service_cluster_ip_range: Option<String>,
    /// ReplicaSets synced concurrently.
    #[arg(long, default_value_t = 5)]
    pub concurrent_replicaset_syncs: usize,
    /// ReplicationControllers synced concurrently.
    #[arg(long, default_value_t = 5)]
    pub concurrent_rc_syncs: usize,
    /// Deployments synced concurrently.
    #[arg(long, default_value_t = 5)]
    pub concurrent_deployment_syncs: usize,
    /// Garbage collector workers.
    #[arg(long, default_value_t = 20)]
    pub concurrent_gc_syncs: usize,
    /// Namespaces synced concurrently.
    #[arg(long, default_value_t = 10)]
    pub concurrent_namespace_syncs: usize,
    /// ServiceAccounts synced concurrently.
    #[arg(long, default_value_t = 5)]
    pub concurrent_serviceaccount_syncs: usize,
    /// Endpoints synced concurrently.
    #[arg(long, default_value_t = 5)]
    pub concurrent_endpoint_syncs: usize,
    /// EndpointSlices (per Service) synced concurrently.
    #[arg(long, default_value_t = 5)]
    pub concurrent_service_endpoint_syncs: usize,
    /// How long a node may go without renewing its Lease before it is marked unhealthy.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    pub node_monitor_grace_period: Duration,
    /// How often node health is checked.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub node_monitor_period: Duration,
    /// PEM CA bundle published as `kube-root-ca.crt` in every namespace (default: the CA of
    /// the kubeconfig).
    #[arg(long)]
    pub root_ca_file: Option<PathBuf>,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: Option<PathBuf>,
    pub controllers: Vec<String>,
    pub leader_elect: bool,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub lease_namespace: String,
    pub lease_name: String,
    /// This instance's identity (leader election holder, event reporting instance).
    pub identity: String,
    pub bind: SocketAddr,
    pub cluster_cidr: Option<String>,
    pub allocate_node_cidrs: bool,
    pub node_cidr_mask_size: u8,
    pub service_cluster_ip_range: Option<String>,
    pub concurrent_replicaset_syncs: usize,
    pub concurrent_rc_syncs: usize,
    pub concurrent_deployment_syncs: usize,
    pub concurrent_gc_syncs: usize,
    pub concurrent_namespace_syncs: usize,
    pub concurrent_serviceaccount_syncs: usize,
    pub concurrent_endpoint_syncs: usize,
    pub concurrent_service_endpoint_syncs: usize,
    pub node_monitor_grace_period: Duration,
    pub node_monitor_period: Duration,
    pub root_ca_file: Option<PathBuf>,
}

impl TryFrom<Args> for Config {
    type Error = anyhow::Error;

    fn try_from(a: Args) -> anyhow::Result<Self> {
        if a.leader_elect && a.leader_elect_renew_deadline >= a.leader_elect_lease_duration {
            bail!("--leader-elect-renew-deadline must be less than --leader-elect-lease-duration");
        }
        if a.leader_elect && a.leader_elect_retry_period >= a.leader_elect_renew_deadline {
            bail!("--leader-elect-retry-period must be less than --leader-elect-renew-deadline");
        }
        if !(8..=30).contains(&a.node_cidr_mask_size) {
            bail!("--node-cidr-mask-size must be between 8 and 30");
        }
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        let identity = format!("{host}_{:032x}", rand::random::<u128>());
        Ok(Self {
            kubeconfig: a.kubeconfig,
            controllers: a.controllers,
            leader_elect: a.leader_elect,
            lease_duration: a.leader_elect_lease_duration,
            renew_deadline: a.leader_elect_renew_deadline,
            retry_period: a.leader_elect_retry_period,
            lease_namespace: a.leader_elect_resource_namespace,
            lease_name: a.leader_elect_resource_name,
            identity,
            bind: SocketAddr::new(a.bind_address, a.secure_port),
            cluster_cidr: a.cluster_cidr,
            allocate_node_cidrs: a.allocate_node_cidrs,
            node_cidr_mask_size: a.node_cidr_mask_size,
            service_cluster_ip_range: a.service_cluster_ip_range,
            concurrent_replicaset_syncs: a.concurrent_replicaset_syncs,
            concurrent_rc_syncs: a.concurrent_rc_syncs,
            concurrent_deployment_syncs: a.concurrent_deployment_syncs,
            concurrent_gc_syncs: a.concurrent_gc_syncs,
            concurrent_namespace_syncs: a.concurrent_namespace_syncs,
            concurrent_serviceaccount_syncs: a.concurrent_serviceaccount_syncs,
            concurrent_endpoint_syncs: a.concurrent_endpoint_syncs,
            concurrent_service_endpoint_syncs: a.concurrent_service_endpoint_syncs,
            node_monitor_grace_period: a.node_monitor_grace_period,
            node_monitor_period: a.node_monitor_period,
            root_ca_file: a.root_ca_file,
        })
    }
}

impl Config {
    /// A client from --kubeconfig (or the inferred environment).
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        Ok(component_base::client::from_kubeconfig(self.kubeconfig.as_deref()).await?)
    }

    pub fn leader_election(&self) -> LeaderElectionConfig {
        LeaderElectionConfig {
            namespace: self.lease_namespace.clone(),
            name: self.lease_name.clone(),
            identity: self.identity.clone(),
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        }
    }
}

/// A Go-style duration: `15s`, `100ms`, `1m30s`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest == "0" {
        return Ok(total);
    }
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        let value: f64 = rest[..n]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown unit {other:?} in duration {s:?}")),
        };
        rest = &rest[u..];
        total += Duration::from_secs_f64(value * unit);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn durations_parse_like_go() {
        let cases = [
            ("15s", 15_000),
            ("100ms", 100),
            ("1m30s", 90_000),
            ("2h", 7_200_000),
            ("0", 0),
            ("1.5s", 1500),
        ];
        for (s, ms) in cases {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_millis(ms), "{s}");
        }
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn defaults_are_upstreams_and_validation_rejects_bad_lease_timing() {
        let c = Config::try_from(Args::parse_from(["cm"])).unwrap();
        assert!(c.leader_elect);
        assert_eq!(
            (c.lease_duration, c.renew_deadline, c.retry_period),
            (
                Duration::from_secs(15),
                Duration::from_secs(10),
                Duration::from_secs(2)
            )
        );
        assert_eq!(c.controllers, ["*"]);
        assert_eq!(c.bind.port(), 10257);
        let c = Config::try_from(Args::parse_from([
            "cm",
            "--leader-elect=false",
            "--controllers=*,-nodeipam",
        ]))
        .unwrap();
        assert!(!c.leader_elect);
        assert_eq!(c.controllers, ["*", "-nodeipam"]);
        assert!(Config::try_from(Args::parse_from([
            "cm",
            "--leader-elect-renew-deadline=20s"
        ]))
        .is_err());
        assert!(
            c.allocate_node_cidrs && c.cluster_cidr.is_none(),
            "node IPAM allocates from 10.244.0.0/16 by default"
        );
    }
}
