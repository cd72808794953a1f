//! Measures the proxy's sync on this machine, in both modes (iptables-restore and nft -f) in
//! one run: the first full sync (with the kernel state unknown), one endpoint change (only
//! the changed service re-rendered, only its chains / map elements applied; many rounds,
//! p50/p99/max, with the median split into plan, render, script and iptables-restore/nft),
//! a sync with nothing changed (the same objects: what a Node update costs), and a forced full
//! resync, for N services × M endpoints, each mode and size inside a private network
//! namespace of its own (the host's rules are never touched). Needs root, iptables and nft.
//! A one-change time is the whole `Proxier::sync` (plan, render, script, apply, conntrack),
//! from the snapshot to the rule being live.
//!
//! `bench-proxy [--services N,N...] [--endpoints M] [--rounds R] [--modes iptables,nftables]
//! [--verbose]` (`--dump-nft PATH` writes the nftables mode's first full script for the first
//! size instead, `--dump-iptables PATH` the iptables mode's full restore text, to time
//! `iptables-restore --noflush` on by hand) (default 1000,10000 services × 2 endpoints, 50
//! rounds, both modes; `--verbose` prints every round; `--part-ports N`,
//! `--rewrite-part-ports N` and `--restore-workers N` tune the split iptables full sync). It also times a full sync after a
//! proxy restart with the rules in place. Every 10th service is a NodePort, every 7th has ClientIP
//! affinity, every 5th is a LoadBalancer with externalTrafficPolicy Local, every 11th is UDP,
//! so the sync exercises every rule shape.

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
use proxy::sync::{Mode, Proxier, Snapshot, SyncConfig};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn arg_text(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn arg(name: &str, default: usize) -> usize {
    arg_text(name)
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

/// The figures of one mode at one size.
struct Figures {
    mode: Mode,
    services: usize,
    first_full: Duration,
    changes: Vec<Duration>,
    /// Medians of the one-change syncs' parts: plan, render, script, restore/nft, unchanged sync.
    parts: [Duration; 5],
    added: Duration,
    forced_full: Duration,
    restart: Duration,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The nearest-rank percentile `p` (0–100) of sorted `v`.
fn percentile(v: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn bench(mode: Mode, n: usize, m: usize, rounds: usize, verbose: bool) -> anyhow::Result<Figures> {
    let ns = Netns(format!("kubrs-px-bench-{}", std::process::id()));
    anyhow::ensure!(
        Command::new("ip")
            .args(["netns", "add", &ns.0])
            .status()?
            .success(),
        "ip netns add failed (root needed)"
    );
    let (services, mut slices) = inputs(n, m);
    let mut proxier = new_proxier(&ns, mode);
    let snap = |slices: &Vec<Arc<EndpointSlice>>| Snapshot {
        services: services.clone(),
        slices: slices.clone(),
        nodes: vec![],
    };
    let (what, tool) = match mode {
        Mode::Iptables => ("nat + filter rules", "iptables-restore"),
        Mode::Nftables => ("rules + map elements", "nft -f"),
    };
    println!(
        "\n{mode:?}: {n} services x {m} endpoints, in netns {}",
        ns.0
    );
    let t = Instant::now();
    let r = proxier.sync(&snap(&slices), true)?;
    let first_full = t.elapsed();
    println!(
        "  first full sync: {} (render {}, {tool} {}), {} + {} {what}, {} KiB applied",
        ms(first_full),
        ms(r.render_time),
        ms(r.restore_time),
        r.nat_rules,
        r.filter_rules,
        r.restore_bytes / 1024
    );
    let mut changes = Vec::new();
    let mut parts: [Vec<Duration>; 5] = Default::default();
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
        assert!(r.restored && !r.full && r.rerendered == 1);
        changes.push(change);
        for (i, d) in [
            r.plan_time,
            r.render_time,
            r.script_time,
            r.restore_time,
            idle,
        ]
        .into_iter()
        .enumerate()
        {
            parts[i].push(d);
        }
        if verbose {
            println!(
                "  round {round}: unchanged sync {} | one endpoint change {} (plan {}, render {}, script {}, {tool} {}, {} bytes)",
                ms(idle),
                ms(change),
                ms(r.plan_time),
                ms(r.render_time),
                ms(r.script_time),
                ms(r.restore_time),
                r.restore_bytes,
            );
        }
    }
    let parts = parts.map(median);
    println!(
        "  {rounds} one-endpoint changes, median parts: plan {}, render {}, script {}, {tool} {}; unchanged sync {}",
        ms(parts[0]),
        ms(parts[1]),
        ms(parts[2]),
        ms(parts[3]),
        ms(parts[4])
    );
    // A new service: its rules go into the fixed chains, so nat `KUBE-SERVICES` (one rule per
    // destination of every service) is rewritten whole.
    let mut services = services.clone();
    services.push(Arc::new(service(n)));
    slices.push(Arc::new(slice(n, m, 0)));
    let snap = |slices: &Vec<Arc<EndpointSlice>>| Snapshot {
        services: services.clone(),
        slices: slices.clone(),
        nodes: vec![],
    };
    let t = Instant::now();
    let r = proxier.sync(&snap(&slices), false)?;
    let added = t.elapsed();
    assert!(r.restored && !r.full);
    println!(
        "  one service added (fixed chains rewritten): {} ({tool} {}, {} KiB)",
        ms(added),
        ms(r.restore_time),
        r.restore_bytes / 1024
    );
    let t = Instant::now();
    let full = proxier.sync(&snap(&slices), true)?;
    let forced_full = t.elapsed();
    println!(
        "  forced full resync {} (render {}, script {}, {tool} {}, whole apply {})",
        ms(forced_full),
        ms(full.render_time),
        ms(full.script_time),
        ms(full.restore_time),
        ms(full.apply_time)
    );
    // A proxy restart: a new proxier with the rules of the old one in place (the kernel state
    // unknown: the chains are listed to find stale ones, then everything is written).
    let mut restarted = new_proxier(&ns, mode);
    let t = Instant::now();
    let r = restarted.sync(&snap(&slices), true)?;
    let restart = t.elapsed();
    println!(
        "  full sync after a proxy restart, rules in place: {} (render {}, script {}, {tool} {}, whole apply {})",
        ms(restart),
        ms(r.render_time),
        ms(r.script_time),
        ms(r.restore_time),
        ms(r.apply_time)
    );
    Ok(Figures {
        mode,
        services: n,
        first_full,
        changes,
        parts,
        added,
        forced_full,
        restart,
    })
}

/// A proxier syncing the rules of network namespace `ns`.
fn new_proxier(ns: &Netns, mode: Mode) -> Proxier<System> {
    // The proxy's default: one `iptables-restore` more than the CPUs, up to its maximum.
    let workers = proxy::sync::default_restore_workers();
    Proxier::new(
        System::new(Some(ns.0.clone())),
        SyncConfig {
            render: render_config(),
            pod_routes: false,
            mode,
        },
    )
    // --part-ports N: service ports per iptables-restore of a split full sync (to tune it).
    .with_part_ports(arg("--part-ports", proxy::sync::FULL_SYNC_PART_PORTS))
    // --rewrite-part-ports N: the same when the rules are in place (forced resync, restart).
    .with_rewrite_part_ports(arg("--rewrite-part-ports", proxy::sync::REWRITE_PART_PORTS))
    // --restore-workers N: iptables-restore processes at once for those parts.
    .with_restore_workers(arg("--restore-workers", workers))
}

/// The benchmark's `n` Services with `m` endpoints each (one EndpointSlice per Service).
fn inputs(n: usize, m: usize) -> (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
    (
        (0..n).map(|i| Arc::new(service(i))).collect(),
        (0..n).map(|i| Arc::new(slice(i, m, 0))).collect(),
    )
}

/// The benchmark node's render configuration.
fn render_config() -> RenderConfig {
    RenderConfig {
        node_name: "bench".into(),
        cluster_cidr: Cidr::parse("10.244.0.0/16"),
        ..Default::default()
    }
}

fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = arg_text("--services")
        .unwrap_or_else(|| "1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let m = arg("--endpoints", 2);
    let rounds = arg("--rounds", 50).max(1);
    let verbose = std::env::args().any(|a| a == "--verbose");
    let modes: Vec<Mode> = arg_text("--modes")
        .unwrap_or_else(|| "iptables,nftables".into())
        .split(',')
        .map(|s| match s.trim() {
            "iptables" => Ok(Mode::Iptables),
            "nftables" => Ok(Mode::Nftables),
            other => Err(anyhow::anyhow!("unknown mode {other:?}")),
        })
        .collect::<Result<_, _>>()?;
    if let Some(path) = arg_text("--dump-nft") {
        // The nftables mode's first full sync script for the first size, to study `nft -f`.
        let n = sizes[0];
        let (services, slices) = inputs(n, m);
        let config = render_config();
        let r = proxy::nftables::render(&services, &slices, &config);
        std::fs::write(&path, proxy::nftables::script(&r.rules, None, false))?;
        println!("wrote {path}");
        return Ok(());
    }
    if let Some(path) = arg_text("--dump-iptables") {
        // The iptables mode's full restore text for the first size (as a full sync with no
        // chains of ours in the kernel writes it), to study `iptables-restore`.
        let n = sizes[0];
        let (services, slices) = inputs(n, m);
        let config = render_config();
        let r = proxy::rules::render(&services, &slices, &config);
        std::fs::write(&path, proxy::rules::restore_text(&r.rules, None, &[]))?;
        println!("wrote {path}");
        return Ok(());
    }
    let mut all = Vec::new();
    for &n in &sizes {
        for &mode in &modes {
            all.push(bench(mode, n, m, rounds, verbose)?);
        }
    }
    println!("\nsummary ({m} endpoints per service, {rounds} one-change rounds):");
    println!(
        "  {:<9} {:>9} {:>16} {:>15} {:>15} {:>15} {:>14} {:>18} {:>15}",
        "mode",
        "services",
        "first full sync",
        "one change p50",
        "one change p99",
        "one change max",
        "service added",
        "forced full resync",
        "after restart"
    );
    for f in &all {
        let mut c = f.changes.clone();
        c.sort();
        println!(
            "  {:<9} {:>9} {:>16} {:>15} {:>15} {:>15} {:>14} {:>18} {:>15}",
            format!("{:?}", f.mode).to_lowercase(),
            f.services,
            ms(f.first_full),
            ms(percentile(&c, 50.0)),
            ms(percentile(&c, 99.0)),
            ms(*c.last().expect("rounds >= 1")),
            ms(f.added),
            ms(f.forced_full),
            ms(f.restart)
        );
    }
    println!(
        "\n  median parts of one change (plan / render / script / apply tool; unchanged sync):"
    );
    for f in &all {
        println!(
            "  {:<9} {:>9}   {} / {} / {} / {}; {}",
            format!("{:?}", f.mode).to_lowercase(),
            f.services,
            ms(f.parts[0]),
            ms(f.parts[1]),
            ms(f.parts[2]),
            ms(f.parts[3]),
            ms(f.parts[4])
        );
    }
    // Idle, nothing changes: the proxy's loop runs one sync per --sync-period (30 s), which
    // finds the same Service and EndpointSlice objects and plans, renders and applies nothing
    // (the "unchanged sync" above); full resyncs come once per --full-sync-period (1 h).
    let sync_period = Duration::from_secs(30);
    let full_period = Duration::from_secs(3600);
    println!(
        "\n  idle CPU, from the timed syncs above (wall time counted as CPU; nothing changes: one unchanged sync per 30 s, one forced full resync per hour):"
    );
    for f in &all {
        let per_s = f.parts[4].as_secs_f64() / sync_period.as_secs_f64()
            + f.forced_full.as_secs_f64() / full_period.as_secs_f64();
        println!(
            "  {:<9} {:>9}   {:.3}% of a core (target ≈ 0)",
            format!("{:?}", f.mode).to_lowercase(),
            f.services,
            per_s * 100.0
        );
    }
    Ok(())
}
