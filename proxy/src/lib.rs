//! The `proxy` binary's library: kube-proxy's iptables mode, and its nftables mode
//! (`--proxy-mode=nftables`, [`nftables`]). It watches Services, EndpointSlices and Nodes
//! (kube-runtime reflectors) and keeps this node's iptables rules (tables nat and filter) or
//! nftables table `ip kube-proxy`, and host-gw routes to the other nodes' pod CIDRs, in line
//! with them.
//!
//! [`run`] is the whole component: reflectors, the rate-limited sync loop ([`sync::Proxier`]
//! on a [`dataplane::System`]), `/healthz` and `/metrics`, all stopped by one cancellation
//! token. Rules are left in place on shutdown (a restart rebuilds them with no gap);
//! `--cleanup` removes them. Rendering is pure ([`rules::render`]); the OS sits behind
//! [`dataplane::Dataplane`].

pub mod dataplane;
pub mod metrics;
pub mod model;
pub mod nftables;
pub mod plan;
pub mod rules;
mod server;
pub mod sync;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use component_base::events::{EventRecorder, EventSink, EventType};
use dataplane::{Dataplane, System};
use metrics::Metrics;
use server::Health;
use sync::{Proxier, Snapshot, SyncConfig, SyncError};

/// Command-line flags (upstream kube-proxy names where they exist).
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "proxy",
    version,
    about = "Programs iptables rules for Services on this node, as kube-proxy's iptables mode does."
)]
pub struct Args {
    /// Kubeconfig to reach the API server (default: $KUBECONFIG, ~/.kube/config, or in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name (endpoints on it are local); default: the host name.
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// The pod network; traffic to cluster IPs from outside it is masqueraded, and pod traffic
    /// to external addresses of externalTrafficPolicy=Local services short-circuits.
    #[arg(long)]
    pub cluster_cidr: Option<String>,
    /// Masquerade all traffic sent to cluster IPs.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub masquerade_all: bool,
    /// The bit of the packet mark that means "masquerade" (0-31).
    #[arg(long, default_value_t = 14)]
    pub iptables_masquerade_bit: u8,
    /// Shortest time between two syncs (changes arriving faster are batched).
    #[arg(long, alias = "iptables-min-sync-period", default_value = "1s", value_parser = parse_duration)]
    pub min_sync_period: Duration,
    /// Time between syncs when no change is reported (a sync that finds the same Services
    /// and EndpointSlices plans and applies nothing); /healthz fails after two periods without
    /// a successful sync.
    #[arg(long, alias = "iptables-sync-period", default_value = "30s", value_parser = parse_duration)]
    pub sync_period: Duration,
    /// Time between forced full syncs, which rewrite every rule and so repair rules changed
    /// behind the proxy's back (upstream's fixed one hour; stretched to ten times the last full
    /// sync's duration when that is longer). Other syncs apply only what changed.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub full_sync_period: Duration,
    /// Address of /healthz (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:10256")]
    pub healthz_bind_address: String,
    /// Address of /metrics (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub metrics_bind_address: String,
    /// Keep routes to every other node's pod CIDR via its InternalIP (host-gw networking).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub pod_routes: bool,
    /// Remove every KUBE-* rule and chain, the nftables table `ip kube-proxy` and the
    /// proxy's routes, then exit.
    #[arg(long)]
    pub cleanup: bool,
    /// How services are programmed: `iptables` (iptables-restore into tables nat and filter)
    /// or `nftables` (one `table ip kube-proxy` with verdict maps, applied with `nft -f`;
    /// sync cost no longer grows with the number of services).
    #[arg(long, value_enum, default_value_t = sync::Mode::Iptables)]
    pub proxy_mode: sync::Mode,
    /// Run iptables, conntrack and ip inside this named network namespace (/run/netns/NAME)
    /// instead of the proxy's own, for simulated nodes on one machine.
    #[arg(long)]
    pub netns: Option<String>,
}

/// Parse a Go-style duration (`500ms`, `1s`, `1m30s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
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

/// Invalid flags.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{0} {1:?} is not host:port")]
    Address(&'static str, String),
    #[error("--cluster-cidr {0:?} is not an IPv4 CIDR")]
    ClusterCidr(String),
    #[error("--iptables-masquerade-bit must be 0..=31, got {0}")]
    MasqueradeBit(u8),
    #[error("--min-sync-period ({0:?}) must not exceed --sync-period ({1:?}), which must be > 0")]
    Periods(Duration, Duration),
    #[error("--full-sync-period must be > 0")]
    FullSyncPeriod,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: Option<PathBuf>,
    pub hostname_override: Option<String>,
    pub cluster_cidr: Option<rules::Cidr>,
    pub masquerade_all: bool,
    pub masquerade_bit: u8,
    pub min_sync_period: Duration,
    pub sync_period: Duration,
    pub full_sync_period: Duration,
    pub healthz_bind_address: SocketAddr,
    pub metrics_bind_address: SocketAddr,
    pub pod_routes: bool,
    pub cleanup: bool,
    pub netns: Option<String>,
    pub mode: sync::Mode,
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;
    fn try_from(a: Args) -> Result<Self, ConfigError> {
        let healthz_bind_address = a.healthz_bind_address.parse().map_err(|_| {
            ConfigError::Address("healthz-bind-address", a.healthz_bind_address.clone())
        })?;
        let metrics_bind_address = a.metrics_bind_address.parse().map_err(|_| {
            ConfigError::Address("metrics-bind-address", a.metrics_bind_address.clone())
        })?;
        let cluster_cidr = match &a.cluster_cidr {
            None => None,
            Some(c) => {
                // Dual-stack lists: the IPv4 entry.
                let v4 = c.split(',').map(str::trim).find(|c| !c.contains(':'));
                Some(
                    v4.and_then(rules::Cidr::parse)
                        .ok_or_else(|| ConfigError::ClusterCidr(c.clone()))?,
                )
            }
        };
        if a.iptables_masquerade_bit > 31 {
            return Err(ConfigError::MasqueradeBit(a.iptables_masquerade_bit));
        }
        if a.sync_period.is_zero() || a.min_sync_period > a.sync_period {
            return Err(ConfigError::Periods(a.min_sync_period, a.sync_period));
        }
        if a.full_sync_period.is_zero() {
            return Err(ConfigError::FullSyncPeriod);
        }
        Ok(Config {
            kubeconfig: a.kubeconfig,
            hostname_override: a.hostname_override.filter(|h| !h.trim().is_empty()),
            cluster_cidr,
            masquerade_all: a.masquerade_all,
            masquerade_bit: a.iptables_masquerade_bit,
            min_sync_period: a.min_sync_period,
            sync_period: a.sync_period,
            full_sync_period: a.full_sync_period,
            healthz_bind_address,
            metrics_bind_address,
            pod_routes: a.pod_routes,
            cleanup: a.cleanup,
            netns: a.netns,
            mode: a.proxy_mode,
        })
    }
}

/// Errors that stop the proxy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("admin server: {0}")]
    Server(#[from] std::io::Error),
    #[error("cleanup: {0}")]
    Cleanup(#[from] dataplane::DataplaneError),
    #[error("network namespace {0:?} does not exist")]
    Netns(String),
}

/// Build a client from the configured kubeconfig (or the usual inference).
pub async fn client(config: &Config) -> Result<Client, Error> {
    component_base::client::from_kubeconfig(config.kubeconfig.as_deref())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))
}

/// This node's name: `--hostname-override`, else the kernel's host name, lowercased.
pub fn node_name(config: &Config) -> String {
    config
        .hostname_override
        .clone()
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into())
        .to_lowercase()
}

/// `--cleanup`: delete every KUBE-* rule and chain (and jumps to them), the nftables table
/// and our routes (whatever the mode that made them).
pub fn cleanup(dp: &mut impl Dataplane) -> Result<(), dataplane::DataplaneError> {
    let save = dp.save()?;
    let text = rules::cleanup_text(&save);
    if !text.is_empty() {
        dp.restore(&text)?;
    }
    match dp.nft(&nftables::cleanup_script()) {
        // No nft on this machine: there is no table of ours either.
        Err(dataplane::DataplaneError::Spawn { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound => {}
        r => r?,
    }
    for dst in dp.routes()?.into_keys() {
        dp.route_delete(&dst)?;
    }
    Ok(())
}

/// A started proxy.
pub struct Running {
    pub healthz_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    /// Ends when the proxy stops.
    pub task: tokio::task::JoinHandle<()>,
}

/// Run until `shutdown` is cancelled (or, with `--cleanup`, until the rules are removed).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    if let Some(ns) = &config.netns {
        if !dataplane::netns_exists(ns) {
            return Err(Error::Netns(ns.clone()));
        }
    }
    if config.cleanup {
        let mut dp = System::new(config.netns.clone());
        return tokio::task::spawn_blocking(move || cleanup(&mut dp))
            .await
            .map_err(|e| Error::Server(std::io::Error::other(e)))?
            .map_err(Error::from);
    }
    let client = client(&config).await?;
    let running = start(config, client, shutdown).await?;
    let _ = running.task.await;
    Ok(())
}

fn spawn_reflector<K>(
    client: &Client,
    cfg: watcher::Config,
    notify: Arc<Notify>,
    health: Arc<Health>,
    token: CancellationToken,
    relevant: impl Fn(&K) -> Option<(String, String)> + Send + 'static,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(Api::<K>::all(client.clone()), cfg).default_backoff(),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        // Per object, the part that matters: events that leave it unchanged wake nobody.
        let mut seen: HashMap<String, String> = HashMap::new();
        loop {
            let ev = tokio::select! {
                _ = token.cancelled() => return,
                ev = stream.next() => ev,
            };
            match ev {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying")
                }
                Some(Ok(ev)) => {
                    let changed = match &ev {
                        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                            match relevant(o) {
                                Some((k, v)) => seen.insert(k, v.clone()).as_ref() != Some(&v),
                                None => true,
                            }
                        }
                        watcher::Event::Delete(o) => {
                            if let Some((k, _)) = relevant(o) {
                                seen.remove(&k);
                            }
                            true
                        }
                        watcher::Event::Init => false,
                        watcher::Event::InitDone => true,
                    };
                    if changed {
                        health.queued();
                        notify.notify_one();
                    }
                }
            }
        }
    });
    reader
}

/// The routing-relevant part of a Node (pod CIDR, addresses, deletion).
fn node_digest(n: &Node) -> Option<(String, String)> {
    let name = n.metadata.name.clone()?;
    let spec = n.spec.as_ref();
    let digest = format!(
        "{:?}|{:?}|{:?}|{}",
        spec.and_then(|s| s.pod_cidr.as_ref()),
        spec.and_then(|s| s.pod_cidrs.as_ref()),
        sync::node_internal_ips(n),
        n.metadata.deletion_timestamp.is_some()
    );
    Some((name, digest))
}

/// Start the reflectors, the admin servers and the sync loop with a ready client.
pub async fn start(
    config: Config,
    client: Client,
    shutdown: CancellationToken,
) -> Result<Running, Error> {
    let node = node_name(&config);
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(config.sync_period * 2));
    let healthz = server::serve_health(
        config.healthz_bind_address,
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    )
    .await?;
    let metrics_srv = server::serve_metrics(
        config.metrics_bind_address,
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    )
    .await?;
    tracing::info!(node = %node, healthz = %healthz.addr, metrics = %metrics_srv.addr, netns = ?config.netns, "proxy serving health and metrics");

    let notify = Arc::new(Notify::new());
    let services: Store<Service> = spawn_reflector(
        &client,
        watcher::Config::default(),
        notify.clone(),
        health.clone(),
        shutdown.clone(),
        |_: &Service| None,
    );
    let slices: Store<EndpointSlice> = spawn_reflector(
        &client,
        watcher::Config::default().labels(model::SERVICE_NAME_LABEL),
        notify.clone(),
        health.clone(),
        shutdown.clone(),
        |_: &EndpointSlice| None,
    );
    let nodes: Store<Node> = spawn_reflector(
        &client,
        watcher::Config::default(),
        notify.clone(),
        health.clone(),
        shutdown.clone(),
        node_digest,
    );
    let events = EventSink::start(client.clone(), node.clone(), shutdown.clone());
    let recorder = events.recorder("kube-proxy");

    let proxier = Proxier::new(
        System::new(config.netns.clone()),
        SyncConfig {
            render: rules::RenderConfig {
                node_name: node.clone(),
                cluster_cidr: config.cluster_cidr,
                masquerade_all: config.masquerade_all,
                masquerade_bit: config.masquerade_bit,
                sctp: true,
                large_cluster: false,
            },
            pod_routes: config.pod_routes,
            mode: config.mode,
        },
    );
    let lp = Loop {
        config,
        node,
        services,
        slices,
        nodes,
        notify,
        health,
        metrics: metrics.clone(),
        recorder: Some(recorder),
    };
    let (healthz_addr, metrics_addr) = (healthz.addr, metrics_srv.addr);
    let task = tokio::spawn(async move {
        lp.run(proxier, shutdown).await;
        let _ = healthz.task.await;
        let _ = metrics_srv.task.await;
    });
    Ok(Running {
        healthz_addr,
        metrics_addr,
        metrics,
        task,
    })
}

/// The sync loop: waits for changes, batches them (`--min-sync-period`), syncs at least every
/// `--sync-period`, forces a full sync every `--full-sync-period`, retries failures with
/// exponential back-off.
struct Loop {
    config: Config,
    node: String,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Store<Node>,
    notify: Arc<Notify>,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// Where Warning events go (none in unit tests).
    recorder: Option<EventRecorder>,
}

impl Loop {
    async fn run<D: Dataplane>(self, mut proxier: Proxier<D>, token: CancellationToken) {
        let ready = async {
            let _ = self.services.wait_until_ready().await;
            let _ = self.slices.wait_until_ready().await;
            let _ = self.nodes.wait_until_ready().await;
        };
        tokio::select! {
            _ = ready => {}
            _ = token.cancelled() => return,
        }
        tracing::info!("caches synced; programming rules");
        let (min, period) = (self.config.min_sync_period, self.config.sync_period);
        // Retries start at --min-sync-period (at least 100 ms) and double up to --sync-period.
        let first_backoff = min.max(Duration::from_millis(100)).min(period);
        let mut backoff = first_backoff;
        let mut retry_at: Option<Instant> = None;
        let full_period = self.config.full_sync_period;
        let mut next_full = Instant::now() + full_period;
        let mut next_periodic = Instant::now() + period;
        let mut last_sync: Option<Instant> = None;
        let mut pending = true;
        loop {
            if !pending {
                let far = Instant::now() + Duration::from_secs(3600);
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = self.notify.notified() => {}
                    _ = tokio::time::sleep_until(next_full.min(next_periodic).into()), if retry_at.is_none() => {}
                    _ = tokio::time::sleep_until(retry_at.unwrap_or(far).into()), if retry_at.is_some() => {}
                }
            }
            pending = false;
            if let Some(last) = last_sync {
                let earliest = last + min;
                if Instant::now() < earliest {
                    tokio::select! {
                        _ = token.cancelled() => break,
                        _ = tokio::time::sleep_until(earliest.into()) => {}
                    }
                }
            }
            let full = Instant::now() >= next_full;
            let snap = Snapshot {
                services: self.services.state(),
                slices: self.slices.state(),
                nodes: self.nodes.state(),
            };
            let started = Instant::now();
            let joined = tokio::task::spawn_blocking(move || {
                let r = proxier.sync(&snap, full);
                (proxier, snap, r)
            })
            .await;
            let (p, snap, result) = match joined {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "sync task panicked; stopping");
                    break;
                }
            };
            proxier = p;
            let took = started.elapsed();
            last_sync = Some(Instant::now());
            next_periodic = Instant::now() + period;
            self.metrics.sync_duration.observe(took.as_secs_f64());
            match result {
                Ok(report) => {
                    self.health.synced(started);
                    if report.fell_back {
                        // The partial apply failed (logged); the full sync after it did not.
                        self.metrics.restore_failures.inc();
                    }
                    retry_at = None;
                    backoff = first_backoff;
                    if report.full {
                        // A full rewrite of a big ruleset is slow (iptables-nft: ~30 s for
                        // 10,000 services); never let resyncs take over 10% of the time.
                        let interval = full_period.max(took * 10);
                        if interval > full_period {
                            tracing::info!(
                                full_sync_ms = took.as_millis() as u64,
                                next_in_s = interval.as_secs(),
                                "full resync is slow; stretching the interval between full resyncs"
                            );
                        }
                        next_full = started + interval;
                    }
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or_default();
                    self.metrics.last_sync_timestamp.set(now);
                    match self.config.mode {
                        sync::Mode::Iptables => {
                            self.metrics.set_rules("filter", report.filter_rules);
                            self.metrics.set_rules("nat", report.nat_rules);
                        }
                        // Rules of the table, and elements of its verdict maps.
                        sync::Mode::Nftables => {
                            self.metrics.set_rules("nftables", report.nat_rules);
                            self.metrics
                                .set_rules("nftables-map-elements", report.filter_rules);
                        }
                    }
                    self.metrics.service_ports.set(report.service_ports as i64);
                    if report.restored {
                        tracing::info!(
                            full = report.full,
                            bytes = report.restore_bytes,
                            service_ports = report.service_ports,
                            nat_rules = report.nat_rules,
                            rerendered = report.rerendered,
                            plan_ms = report.plan_time.as_millis() as u64,
                            render_ms = report.render_time.as_millis() as u64,
                            apply_ms = report.apply_time.as_millis() as u64,
                            "synced proxy rules"
                        );
                    } else {
                        tracing::debug!(took_ms = took.as_millis() as u64, "rules unchanged");
                    }
                    for e in &report.route_errors {
                        tracing::warn!(error = %e, "updating pod routes failed; retrying at the next sync");
                    }
                    if !report.route_errors.is_empty() && retry_at.is_none() {
                        retry_at = Some(Instant::now() + period.min(Duration::from_secs(10)));
                    }
                    self.report_warnings(&snap, &report.new_warnings);
                }
                Err(e) => {
                    if matches!(e, SyncError::Restore(_) | SyncError::Nft(_)) {
                        self.metrics.restore_failures.inc();
                    }
                    tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "sync failed");
                    if let Some(r) = &self.recorder {
                        r.event_ref(
                            ObjectReference {
                                api_version: Some("v1".into()),
                                kind: Some("Node".into()),
                                name: Some(self.node.clone()),
                                uid: Some(self.node.clone()),
                                ..Default::default()
                            },
                            EventType::Warning,
                            "SyncProxyRulesFailed",
                            e.to_string(),
                        );
                    }
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(period);
                }
            }
        }
        tracing::info!("proxy stopped; rules are left in place");
    }

    fn report_warnings(&self, snap: &Snapshot, warnings: &[model::Warning]) {
        for w in warnings {
            tracing::warn!(service = %format!("{}/{}", w.namespace, w.name), reason = w.reason, "{}", w.message);
            let svc = snap.services.iter().find(|s| {
                s.metadata.namespace.as_deref() == Some(w.namespace.as_str())
                    && s.metadata.name.as_deref() == Some(w.name.as_str())
            });
            if let (Some(svc), Some(r)) = (svc, &self.recorder) {
                r.event(&**svc, EventType::Warning, w.reason, w.message.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane::{Call, Recording};
    use kube::runtime::reflector::store::Writer;

    fn ready_store<K>() -> (Store<K>, Writer<K>)
    where
        K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    {
        let mut w: Writer<K> = Writer::default();
        let r = w.as_reader();
        w.apply_watcher_event(&watcher::Event::Init);
        w.apply_watcher_event(&watcher::Event::InitDone);
        (r, w)
    }

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["proxy"];
        all.extend_from_slice(args);
        Config::try_from(<Args as clap::Parser>::try_parse_from(all).unwrap()).unwrap()
    }

    fn restores(calls: &[Call]) -> usize {
        calls
            .iter()
            .filter(|c| matches!(c, Call::Restore(_)))
            .count()
    }

    #[test]
    fn flags_are_validated() {
        let c = config(&[
            "--cluster-cidr=fd00::/48,10.244.0.0/16",
            "--min-sync-period=250ms",
        ]);
        assert_eq!(c.cluster_cidr.unwrap().to_string(), "10.244.0.0/16");
        assert_eq!(c.min_sync_period, Duration::from_millis(250));
        assert_eq!(c.sync_period, Duration::from_secs(30));
        assert_eq!(c.full_sync_period, Duration::from_secs(3600));
        assert!(c.pod_routes);
        assert_eq!(c.mode, sync::Mode::Iptables);
        assert_eq!(
            config(&["--proxy-mode=nftables"]).mode,
            sync::Mode::Nftables
        );
        let bad = |args: &[&str]| {
            let mut all = vec!["proxy"];
            all.extend_from_slice(args);
            Config::try_from(<Args as clap::Parser>::try_parse_from(all).unwrap()).is_err()
        };
        assert!(bad(&["--cluster-cidr=10.244.0.0"]));
        assert!(bad(&["--min-sync-period=1m", "--sync-period=30s"]));
        assert!(bad(&["--full-sync-period=0s"]));
        assert!(bad(&["--iptables-masquerade-bit=32"]));
        assert!(bad(&["--healthz-bind-address=localhost"]));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("5").is_err());
    }

    #[test]
    fn cleanup_removes_iptables_chains_the_nftables_table_and_routes() {
        let dp = Recording::new();
        dp.set_save_output("*nat\n:KUBE-SERVICES - [0:0]\n-A OUTPUT -j KUBE-SERVICES\nCOMMIT\n");
        dp.set_routes(
            [(
                "10.244.2.0/24".to_string(),
                "192.168.77.12".parse().unwrap(),
            )]
            .into(),
        );
        cleanup(&mut dp.clone()).unwrap();
        let calls = dp.take_calls();
        assert!(calls
            .iter()
            .any(|c| matches!(c, Call::Restore(t) if t.contains("-X KUBE-SERVICES"))));
        assert!(calls.contains(&Call::Nft(nftables::cleanup_script())));
        assert!(dp.current_routes().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loop_retries_failures_with_backoff_batches_changes_and_resyncs_periodically() {
        let (services, _ws) = ready_store::<Service>();
        let (slices, _wsl) = ready_store::<EndpointSlice>();
        let (nodes, _wn) = ready_store::<Node>();
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new(Duration::from_secs(60)));
        let notify = Arc::new(Notify::new());
        let lp = Loop {
            config: config(&[
                "--min-sync-period=200ms",
                "--sync-period=1s",
                "--full-sync-period=3s",
                "--pod-routes=false",
            ]),
            node: "node-a".into(),
            services,
            slices,
            nodes,
            notify: notify.clone(),
            health: health.clone(),
            metrics: metrics.clone(),
            recorder: None,
        };
        let dp = Recording::new();
        dp.fail_next_restores(2);
        let proxier = Proxier::new(
            dp.clone(),
            SyncConfig {
                render: rules::RenderConfig::default(),
                pod_routes: false,
                mode: sync::Mode::Iptables,
            },
        );
        let token = CancellationToken::new();
        let started = Instant::now();
        let task = tokio::spawn(lp.run(proxier, token.clone()));
        // Two failures, retried after 200 ms and 400 ms, then success: three restores, and
        // no more once it succeeded.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = 0;
        while seen < 3 && Instant::now() < deadline {
            seen += restores(&dp.take_calls());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(seen, 3);
        assert!(
            started.elapsed() >= Duration::from_millis(600),
            "back-off: {:?}",
            started.elapsed()
        );
        assert!(health.is_healthy());
        assert!(metrics
            .encode()
            .contains("kubeproxy_sync_proxy_rules_iptables_restore_failures_total 2"));
        // A burst of changes with nothing really changed: no restore.
        for _ in 0..20 {
            notify.notify_one();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(restores(&dp.take_calls()), 0);
        // Periodic syncs (every second) find nothing to do; the full resync rewrites
        // everything, once per --full-sync-period.
        tokio::time::sleep(Duration::from_millis(3000)).await;
        assert_eq!(restores(&dp.take_calls()), 1);
        token.cancel();
        task.await.unwrap();
    }
}
