//! The `dns` binary's library: the cluster DNS server (CoreDNS with kubeadm's Corefile:
//! `kubernetes cluster.local in-addr.arpa ip6.arpa { pods insecure; fallthrough }`,
//! `forward . /etc/resolv.conf`, `cache 30`, `health`, `ready`, `prometheus :9153`).
//!
//! [`run`] is the whole component: kube-runtime reflectors over Services, EndpointSlices,
//! Namespaces (and Pods with `--pods verified`) feed a zone rebuild loop ([`zone::Zone::build`],
//! pure); the UDP and TCP listeners answer from the current zone ([`zone::Zone::lookup`], pure)
//! and forward everything else ([`forward::Forwarder`]); `/health`, `/ready` and `/metrics`
//! are served beside them. One cancellation token stops it all.

pub mod admin;
pub mod forward;
pub mod metrics;
pub mod resolv;
pub mod server;
pub mod zone;

/// The wire-format crate, for clients and tests.
pub use hickory_proto as proto;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use forward::{CacheConfig, Forwarder};
use metrics::Metrics;
use resolv::Upstream;
use server::Handler;
use zone::{PodMode, Settings, Zone};

/// How long one upstream gets to answer before the next is asked.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Changes arriving within this window are folded into one zone rebuild.
const REBUILD_BATCH: Duration = Duration::from_millis(50);

/// Command-line flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(
    name = "dns",
    version,
    about = "Cluster DNS: Services, endpoints and pods by name (the Kubernetes DNS schema), everything else forwarded."
)]
pub struct Args {
    /// Kubeconfig to reach the API server (default: $KUBECONFIG, ~/.kube/config, or the pod's
    /// service account).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Address to answer DNS on, UDP and TCP (port 0 picks a free port).
    #[arg(long, default_value = "0.0.0.0:53")]
    pub listen: String,
    /// The cluster domain served.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Where names outside the cluster go: a resolv.conf path, or comma-separated ip[:port]s.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub upstream: String,
    /// Pod records `a-b-c-d.<ns>.pod.<domain>`: insecure (any address), verified (only
    /// existing pods; watches Pods) or disabled.
    #[arg(long, default_value = "insecure")]
    pub pods: String,
    /// TTL of cluster records in seconds (kubeadm's Corefile sets 30).
    #[arg(long, default_value_t = 30)]
    pub ttl: u32,
    /// Longest time in seconds a forwarded answer is cached (0 disables the cache).
    #[arg(long, default_value_t = 30)]
    pub cache_ttl: u32,
    /// Forwarded answers cached at most.
    #[arg(long, default_value_t = 9984)]
    pub cache_size: usize,
    /// Upstream queries in flight at most; more are refused.
    #[arg(long, default_value_t = 1000)]
    pub max_concurrent: usize,
    /// Address of /health and /ready (port 0 picks a free port).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub health_address: String,
    /// Address of /metrics (port 0 picks a free port).
    #[arg(long, default_value = "0.0.0.0:9153")]
    pub metrics_address: String,
}

/// Invalid flags.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{0} {1:?} is not host:port")]
    Address(&'static str, String),
    #[error("--cluster-domain: {0}")]
    Domain(String),
    #[error("--upstream: {0}")]
    Upstream(String),
    #[error("--pods: {0}")]
    Pods(String),
    #[error("--max-concurrent must be at least 1")]
    MaxConcurrent,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub kubeconfig: Option<PathBuf>,
    pub listen: SocketAddr,
    pub zone: Settings,
    pub upstream: Upstream,
    pub cache: CacheConfig,
    pub max_concurrent: usize,
    pub health_address: SocketAddr,
    pub metrics_address: SocketAddr,
}

fn address(flag: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| ConfigError::Address(flag, s.to_string()))
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;
    fn try_from(a: Args) -> Result<Self, ConfigError> {
        let pods: PodMode = a.pods.parse().map_err(ConfigError::Pods)?;
        if a.max_concurrent == 0 {
            return Err(ConfigError::MaxConcurrent);
        }
        Ok(Config {
            kubeconfig: a.kubeconfig,
            listen: address("listen", &a.listen)?,
            zone: Settings::new(&a.cluster_domain, a.ttl, pods).map_err(ConfigError::Domain)?,
            upstream: a.upstream.parse().map_err(ConfigError::Upstream)?,
            cache: CacheConfig {
                capacity: a.cache_size,
                max_ttl: a.cache_ttl,
                // CoreDNS's cache minimum TTL.
                min_ttl: 5,
            },
            max_concurrent: a.max_concurrent,
            health_address: address("health-address", &a.health_address)?,
            metrics_address: address("metrics-address", &a.metrics_address)?,
        })
    }
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    #[error("listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("admin server: {0}")]
    Admin(std::io::Error),
    #[error("upstream resolvers: {0}")]
    Upstream(std::io::Error),
}

/// Build a client from the configured kubeconfig, else the usual inference (in a pod: the
/// service account token and KUBERNETES_SERVICE_HOST).
pub async fn client(config: &Config) -> Result<Client, Error> {
    component_base::client::from_kubeconfig(config.kubeconfig.as_deref())
        .await
        .map_err(|e| Error::Kubeconfig(e.to_string()))
}

/// A started server.
pub struct Running {
    /// Where DNS is answered (UDP and TCP).
    pub dns_addr: SocketAddr,
    pub health_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    /// The upstream resolvers in use.
    pub upstreams: Vec<SocketAddr>,
    /// Ends when the server stops.
    pub task: tokio::task::JoinHandle<()>,
}

/// Run until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let client = client(&config).await?;
    let running = start(config, client, shutdown).await?;
    let _ = running.task.await;
    Ok(())
}

/// Bind UDP and TCP on one address; with port 0, a port free for both.
async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), Error> {
    let mut last = None;
    for _ in 0..if listen.port() == 0 { 20 } else { 1 } {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|e| Error::Listen(listen, e))?;
        let addr = udp.local_addr().map_err(|e| Error::Listen(listen, e))?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(Error::Listen(
        listen,
        last.unwrap_or_else(|| std::io::Error::other("no port")),
    ))
}

/// Watch `K` into a store, stripping each object to what the zone needs, and wake `notify`
/// on every change.
fn spawn_reflector<K>(
    api: Api<K>,
    cfg: watcher::Config,
    strip: fn(&mut K),
    notify: Arc<Notify>,
    token: CancellationToken,
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
        watcher::watcher(api, cfg).default_backoff().modify(strip),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
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
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => {}
                Some(Ok(_)) => notify.notify_one(),
            }
        }
    });
    reader
}

fn strip_meta(m: &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) {
    m.managed_fields = None;
    m.owner_references = None;
    m.finalizers = None;
}

fn strip_service(s: &mut Service) {
    strip_meta(&mut s.metadata);
    s.metadata.labels = None;
    if let Some(a) = &mut s.metadata.annotations {
        a.retain(|k, _| k == zone::TOLERATE_UNREADY);
    }
    s.status = None;
}

fn strip_slice(s: &mut EndpointSlice) {
    strip_meta(&mut s.metadata);
    s.metadata.annotations = None;
    if let Some(l) = &mut s.metadata.labels {
        l.retain(|k, _| k == zone::SERVICE_NAME_LABEL);
    }
    for ep in s.endpoints.iter_mut().flatten() {
        ep.target_ref = None;
        ep.deprecated_topology = None;
        ep.hints = None;
    }
}

fn strip_namespace(n: &mut Namespace) {
    strip_meta(&mut n.metadata);
    n.metadata.labels = None;
    n.metadata.annotations = None;
    n.spec = None;
    n.status = None;
}

fn strip_pod(p: &mut Pod) {
    strip_meta(&mut p.metadata);
    p.metadata.labels = None;
    p.metadata.annotations = None;
    p.spec = None;
    if let Some(s) = &mut p.status {
        *s = k8s_openapi::api::core::v1::PodStatus {
            pod_ip: s.pod_ip.take(),
            pod_ips: s.pod_ips.take(),
            ..Default::default()
        };
    }
}

/// Start the reflectors, the listeners and the admin servers with a ready client.
pub async fn start(
    config: Config,
    client: Client,
    shutdown: CancellationToken,
) -> Result<Running, Error> {
    let (udp, tcp) = bind(config.listen).await?;
    let dns_addr = udp
        .local_addr()
        .map_err(|e| Error::Listen(config.listen, e))?;
    let upstreams = resolv::load(&config.upstream, dns_addr).map_err(Error::Upstream)?;
    if upstreams.is_empty() {
        tracing::error!(upstream = ?config.upstream, "no upstream resolvers: names outside the cluster get SERVFAIL");
    }
    let server_label = if config.listen.ip().is_unspecified() {
        format!("dns://:{}", dns_addr.port())
    } else {
        format!("dns://{dns_addr}")
    };
    let metrics = Arc::new(Metrics::new(&server_label));
    let ready = Arc::new(AtomicBool::new(false));
    let health = admin::serve_health(config.health_address, ready.clone(), shutdown.clone())
        .await
        .map_err(Error::Admin)?;
    let metrics_srv =
        admin::serve_metrics(config.metrics_address, metrics.clone(), shutdown.clone())
            .await
            .map_err(Error::Admin)?;

    let forwarder = Forwarder::new(
        upstreams.clone(),
        FORWARD_TIMEOUT,
        config.cache,
        config.max_concurrent,
        metrics.clone(),
    );
    let handler = Arc::new(Handler::new(
        config.zone.clone(),
        forwarder,
        metrics.clone(),
    ));

    let notify = Arc::new(Notify::new());
    let services = spawn_reflector(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        strip_service,
        notify.clone(),
        shutdown.clone(),
    );
    let slices = spawn_reflector(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(zone::SERVICE_NAME_LABEL),
        strip_slice,
        notify.clone(),
        shutdown.clone(),
    );
    let namespaces = spawn_reflector(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        strip_namespace,
        notify.clone(),
        shutdown.clone(),
    );
    let pods = (config.zone.pods == PodMode::Verified).then(|| {
        spawn_reflector(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            strip_pod,
            notify.clone(),
            shutdown.clone(),
        )
    });
    tracing::info!(
        listen = %dns_addr,
        domain = %config.zone.domain,
        upstreams = ?upstreams,
        health = %health.addr,
        metrics = %metrics_srv.addr,
        "dns serving"
    );

    let udp_task = tokio::spawn(server::serve_udp(
        Arc::new(udp),
        handler.clone(),
        shutdown.clone(),
    ));
    let tcp_task = tokio::spawn(server::serve_tcp(tcp, handler.clone(), shutdown.clone()));
    let stores = Stores {
        services,
        slices,
        namespaces,
        pods,
    };
    let rebuild = tokio::spawn(rebuild_loop(
        stores,
        config.zone.clone(),
        handler,
        notify,
        ready,
        metrics.clone(),
        shutdown,
    ));
    let (health_addr, metrics_addr) = (health.addr, metrics_srv.addr);
    let task = tokio::spawn(async move {
        let _ = rebuild.await;
        let _ = udp_task.await;
        let _ = tcp_task.await;
        let _ = health.task.await;
        let _ = metrics_srv.task.await;
        tracing::info!("dns stopped");
    });
    Ok(Running {
        dns_addr,
        health_addr,
        metrics_addr,
        metrics,
        upstreams,
        task,
    })
}

struct Stores {
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    namespaces: Store<Namespace>,
    pods: Option<Store<Pod>>,
}

impl Stores {
    async fn wait_until_ready(&self) {
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
        let _ = self.namespaces.wait_until_ready().await;
        if let Some(p) = &self.pods {
            let _ = p.wait_until_ready().await;
        }
    }

    fn build(&self, settings: Settings) -> Zone {
        let serial = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        let pods = self.pods.as_ref().map(|p| p.state()).unwrap_or_default();
        Zone::build(
            settings,
            serial,
            &self.services.state(),
            &self.slices.state(),
            &pods,
            &self.namespaces.state(),
        )
    }
}

/// Build the zone once the caches are synced, then again after every batch of changes.
async fn rebuild_loop(
    stores: Stores,
    settings: Settings,
    handler: Arc<Handler>,
    notify: Arc<Notify>,
    ready: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    token: CancellationToken,
) {
    tokio::select! {
        _ = stores.wait_until_ready() => {}
        _ = token.cancelled() => return,
    }
    let stores = Arc::new(stores);
    loop {
        let (s, st) = (stores.clone(), settings.clone());
        let zone = match tokio::task::spawn_blocking(move || s.build(st)).await {
            Ok(z) => z,
            Err(e) => {
                tracing::error!(error = %e, "zone build panicked");
                return;
            }
        };
        metrics.services.set(zone.service_count() as i64);
        metrics.rebuilds.inc();
        tracing::debug!(services = zone.service_count(), "cluster zone rebuilt");
        handler.set_zone(Arc::new(zone));
        if !ready.swap(true, Ordering::AcqRel) {
            tracing::info!("caches synced; answering for the cluster zone");
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = notify.notified() => {}
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(REBUILD_BATCH) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Config, ConfigError> {
        let mut v = vec!["dns"];
        v.extend_from_slice(args);
        Config::try_from(Args::parse_from(v))
    }

    #[test]
    fn defaults_are_coredns_in_a_kubeadm_cluster() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.listen, "0.0.0.0:53".parse().unwrap());
        assert_eq!(c.zone.domain.to_string(), "cluster.local.");
        assert_eq!(c.zone.ttl, 30);
        assert_eq!(c.zone.pods, PodMode::Insecure);
        assert_eq!(c.upstream, Upstream::ResolvConf("/etc/resolv.conf".into()));
        assert_eq!(c.cache.max_ttl, 30);
        assert_eq!(c.health_address.port(), 8080);
        assert_eq!(c.metrics_address.port(), 9153);
    }

    #[test]
    fn bad_flags_are_rejected() {
        assert!(matches!(
            parse(&["--listen", "53"]),
            Err(ConfigError::Address("listen", _))
        ));
        assert!(matches!(
            parse(&["--pods", "maybe"]),
            Err(ConfigError::Pods(_))
        ));
        assert!(matches!(
            parse(&["--upstream", "resolver.example"]),
            Err(ConfigError::Upstream(_))
        ));
        assert!(matches!(
            parse(&["--cluster-domain", "a..b"]),
            Err(ConfigError::Domain(_))
        ));
        assert!(matches!(
            parse(&["--max-concurrent", "0"]),
            Err(ConfigError::MaxConcurrent)
        ));
    }

    #[test]
    fn stripped_pods_keep_only_their_addresses() {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}]}
        }))
        .unwrap();
        strip_pod(&mut p);
        assert!(p.spec.is_none() && p.metadata.labels.is_none());
        let s = p.status.unwrap();
        assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.1"));
        assert!(s.phase.is_none());
    }
}
