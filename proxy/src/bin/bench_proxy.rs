//! Measures the proxy's sync on this machine: render time, the first full sync (iptables-save,
//! one iptables-restore of everything, jump checks), a sync with nothing changed, a sync after
//! one endpoint change (only the changed chains restored), and a forced full resync, for N
//! services × M endpoints, inside a private network namespace (the host's rules are never
//! touched). Needs root and iptables.
//!
//! `bench-proxy [--services N] [--endpoints M] [--rounds R]` (default 1000 × 10, 3 rounds).
//! Every 10th service is a NodePort, every 7th has ClientIP affinity, every 5th is a
//! LoadBalancer with externalTrafficPolicy Local, every 11th is UDP, so the restore exercises
//! every rule shape.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    LoadBalancerIngress, LoadBalancerStatus, Service, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use proxy::dataplane::System;
use proxy::rules::{Cidr, RenderConfig};
use proxy::sync::{Proxier, Snapshot, SyncConfig};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ip(n: usize, base: [u8; 2]) -> String {
    format!("{}.{}.{}.{}", base[0], base[1], (n >> 8) & 255, n & 255)
}

fn service(i: usize) -> Service {
    let udp = i.is_multiple_of(11);
    let mut spec = ServiceSpec {
        type_: Some("ClusterIP".into()),
        cluster_ip: Some(ip(i + 1, [10, 96])),
        ports: Some(vec![ServicePort {
            name: Some("http".into()),
            port: 80,
            protocol: Some(if udp { "UDP" } else { "TCP" }.into()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let mut status = None;
    if i.is_multiple_of(10) || i.is_multiple_of(5) {
        spec.type_ = Some("NodePort".into());
        spec.ports.as_mut().unwrap()[0].node_port = Some(30000 + (i % 2700) as i32);
    }
    if i.is_multiple_of(5) {
        spec.type_ = Some("LoadBalancer".into());
        spec.external_traffic_policy = Some("Local".into());
        status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some(ip(i + 1, [192, 168])),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
    }
    if i.is_multiple_of(7) {
        spec.session_affinity = Some("ClientIP".into());
    }
    Service {
        metadata: ObjectMeta {
            namespace: Some(format!("ns{}", i % 20)),
            name: Some(format!("svc-{i}")),
            ..Default::default()
        },
        spec: Some(spec),
        status,
    }
}

fn slice(i: usize, endpoints: usize, generation: usize) -> EndpointSlice {
    let udp = i.is_multiple_of(11);
    EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some(format!("ns{}", i % 20)),
            name: Some(format!("svc-{i}-abc")),
            labels: Some(BTreeMap::from([(
                proxy::model::SERVICE_NAME_LABEL.to_string(),
                format!("svc-{i}"),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some(if udp { "UDP" } else { "TCP" }.into()),
            app_protocol: None,
        }]),
        endpoints: Some(
            (0..endpoints)
                .map(|e| Endpoint {
                    addresses: vec![ip(i * endpoints + e + 1 + generation * 7, [10, 244])],
                    node_name: Some(
                        if e.is_multiple_of(3) {
                            "bench"
                        } else {
                            "other"
                        }
                        .into(),
                    ),
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let n = arg("--services", 1000);
    let m = arg("--endpoints", 10);
    let rounds = arg("--rounds", 3);
    let ns = Netns(format!("kubrs-px-bench-{}", std::process::id()));
    anyhow::ensure!(
        Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()?
            .success(),
        "ip netns add failed (root needed)"
    );
    let services: Vec<Arc<Service>> = (0..n).map(|i| Arc::new(service(i))).collect();
    let mut slices: Vec<Arc<EndpointSlice>> = (0..n).map(|i| Arc::new(slice(i, m, 0))).collect();
    let mut proxier = Proxier::new(
        System::new(Some(ns.0.clone())),
        SyncConfig {
            render: RenderConfig {
                node_name: "bench".into(),
                cluster_cidr: Cidr::parse("10.244.0.0/16"),
                ..Default::default()
            },
            pod_routes: false,
            mode: proxy::sync::Mode::Iptables,
        },
    );
    let snap = |slices: &Vec<Arc<EndpointSlice>>| Snapshot {
        services: services.clone(),
        slices: slices.clone(),
        nodes: vec![],
    };
    println!(
        "bench-proxy: {n} services x {m} endpoints, in netns {}",
        ns.0
    );
    let t = Instant::now();
    let r = proxier.sync(&snap(&slices), true)?;
    println!(
        "first full sync: {} (render {}, iptables-restore {}), {} nat + {} filter rules, {} KiB restored",
        ms(t.elapsed()),
        ms(r.render_time),
        ms(r.restore_time),
        r.nat_rules,
        r.filter_rules,
        r.restore_bytes / 1024
    );
    for round in 0..rounds {
        let t = Instant::now();
        let r = proxier.sync(&snap(&slices), false)?;
        let idle = t.elapsed();
        assert!(!r.restored);
        // One endpoint change in one service.
        let i = (round * 37 + 1) % n;
        slices[i] = Arc::new(slice(i, m, round + 1));
        let t = Instant::now();
        let r = proxier.sync(&snap(&slices), false)?;
        let change = t.elapsed();
        assert!(r.restored);
        let change_bytes = r.restore_bytes;
        let t = Instant::now();
        let full = proxier.sync(&snap(&slices), true)?;
        println!(
            "round {round}: unchanged sync {} | one endpoint change {} (render {}, iptables-restore {}, {} KiB) | forced full resync {} (render {}, iptables-restore {})",
            ms(idle),
            ms(change),
            ms(r.render_time),
            ms(r.restore_time),
            change_bytes / 1024,
            ms(t.elapsed()),
            ms(full.render_time),
            ms(full.restore_time)
        );
    }
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.0, "iptables-save", "-t", "nat"])
        .output()?;
    let rules = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("-A "))
        .count();
    println!("kernel: {rules} nat rules in the namespace");
    Ok(())
}
