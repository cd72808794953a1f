//! Pods on this node: the watch of bound pods, one serialised worker per pod, the decision of
//! what to do ([`actions`], pure) and its execution through the runtime ([`worker`]), and the
//! status reported back ([`status`], pure).
//!
//! Workers are woken by the pod watch, by the PLEG (runtime changes), by probe results, and by
//! their own timers (back-off expiry, periodic resync). A worker lives until its pod is gone
//! from the API and everything it had on the node is removed.

pub mod actions;
pub mod backoff;
pub mod env;
pub mod runtime_pod;
pub mod spec;
pub mod status;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use component_base::events::EventSink;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Api;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cri::Runtime;
use crate::node::NodeAgent;
use crate::probes::ProbeManager;
use crate::volumes::VolumeManager;
use crate::{Config, Error};
use worker::{Ctx, PodState};

/// Routes wake-ups to per-pod workers, starting them on demand.
pub struct Dispatcher {
    ctx: Arc<Ctx>,
    workers: Mutex<HashMap<String, Arc<Notify>>>,
    refs: Mutex<HashMap<String, ObjectRef<Pod>>>,
    shutdown: CancellationToken,
}

impl Dispatcher {
    /// A pod event from the watch.
    pub fn pod_seen(self: &Arc<Self>, pod: &Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        self.refs
            .lock()
            .unwrap()
            .insert(uid.clone(), ObjectRef::from_obj(pod));
        self.notify(&uid);
    }

    /// Wake the worker of `uid`, starting one if there is none.
    pub fn notify(self: &Arc<Self>, uid: &str) {
        let mut w = self.workers.lock().unwrap();
        if let Some(n) = w.get(uid) {
            n.notify_one();
            return;
        }
        let n = Arc::new(Notify::new());
        n.notify_one();
        w.insert(uid.to_string(), n.clone());
        let me = self.clone();
        let uid = uid.to_string();
        tokio::spawn(async move { me.work(uid, n).await });
    }

    fn lookup(&self, uid: &str) -> Option<Arc<Pod>> {
        let r = self.refs.lock().unwrap().get(uid).cloned()?;
        self.ctx
            .store
            .get(&r)
            .filter(|p| p.metadata.uid.as_deref() == Some(uid))
    }

    async fn work(self: Arc<Self>, uid: String, wake: Arc<Notify>) {
        let mut st = PodState::default();
        let resync = self.ctx.cfg.sync_frequency;
        loop {
            tokio::select! {
                _ = wake.notified() => {}
                _ = self.shutdown.cancelled() => return,
            }
            st.retry_after = None;
            let result = match self.lookup(&uid) {
                Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                    self.ctx.terminate(&pod, &mut st).await
                }
                Some(pod) => self.ctx.sync(&pod, &mut st).await,
                None => match self.ctx.cleanup(&uid).await {
                    Ok(()) => {
                        let mut w = self.workers.lock().unwrap();
                        w.remove(&uid);
                        self.refs.lock().unwrap().remove(&uid);
                        return;
                    }
                    Err(e) => Err(e),
                },
            };
            if let Err(e) = result {
                warn!(pod_uid = %uid, error = %e, "pod sync failed, retrying");
                st.retry_after = Some(Duration::from_secs(2));
            }
            let next = st.retry_after.unwrap_or(resync);
            let wake2 = wake.clone();
            // Sleep until the next sync is due unless woken earlier.
            tokio::select! {
                _ = tokio::time::sleep(next) => wake2.notify_one(),
                _ = wake.notified() => wake2.notify_one(),
                _ = self.shutdown.cancelled() => return,
            }
        }
    }
}

/// The node's allocatable resources, which `resourceFieldRef` falls back to for containers
/// without limits (as upstream).
fn node_allocatable(cfg: &Config, node: &NodeAgent) -> env::NodeAllocatable {
    let (_, alloc) = crate::node::resources(
        cfg,
        node.machine(),
        crate::node::fs_stats(&cfg.root_dir).as_ref(),
    );
    let get = |k: &str, milli: bool| {
        alloc
            .get(k)
            .and_then(|q| {
                if milli {
                    apimachinery::quantity::milli_value(&q.0)
                } else {
                    apimachinery::quantity::value(&q.0)
                }
            })
            .unwrap_or(0)
    };
    env::NodeAllocatable {
        cpu_milli: get("cpu", true),
        memory: get("memory", false),
        ephemeral_storage: get("ephemeral-storage", false),
    }
}

pub struct Kubelet;

impl Kubelet {
    /// Start every part of the kubelet and run until `shutdown`.
    pub async fn start(
        config: Config,
        client: kube::Client,
        runtime: Arc<dyn Runtime>,
        shutdown: CancellationToken,
    ) -> Result<(), Error> {
        let cfg = Arc::new(config);
        let version = runtime.version().await?;
        info!(node = %cfg.node_name, runtime = %version.runtime_name, version = %version.runtime_version, "kubelet starting");

        if let Some(dir) = &cfg.image_dir {
            let t = Instant::now();
            match crate::images::import_dir(
                &cfg.ctr_path,
                &cfg.container_runtime_endpoint,
                dir,
                &cfg.root_dir.join("images-imported.json"),
            )
            .await
            {
                Ok(done) => {
                    info!(dir = %dir.display(), imported = done.len(), took = ?t.elapsed(), "image directory imported")
                }
                Err(e) => warn!(dir = %dir.display(), error = %e, "image import failed"),
            }
        }

        let events = EventSink::start(client.clone(), cfg.node_name.clone(), shutdown.clone());
        let recorder = events.recorder("kubelet");
        let node = Arc::new(NodeAgent::new(cfg.clone(), client.clone(), runtime.clone()));
        node.set_event_recorder(recorder.clone());
        // Upstream's PLEG health check: a relist older than 3 minutes makes the node NotReady.
        let last_relist = Arc::new(std::sync::Mutex::new(Instant::now()));
        let lr = last_relist.clone();
        node.add_health_check("PLEG", move || {
            let age = lr.lock().unwrap().elapsed();
            if age > Duration::from_secs(180) {
                Err(format!(
                    "pleg was last seen active {age:?} ago; threshold is 3m0s"
                ))
            } else {
                Ok(())
            }
        });
        let mut delay = Duration::from_millis(200);
        loop {
            match node.register().await {
                Ok(_) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "node registration failed, retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.cancelled() => return Ok(()),
                    }
                    delay = (delay * 2).min(Duration::from_secs(7));
                }
            }
        }
        tokio::spawn(node.clone().run(shutdown.clone()));

        let (store, writer) = reflector::store::<Pod>();
        let (probe_tx, mut probe_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let probes = ProbeManager::new(runtime.clone(), recorder.clone(), probe_tx);
        let host_dns = crate::pods::spec::ResolvConf::parse(
            &std::fs::read_to_string(&cfg.resolv_conf).unwrap_or_default(),
        );
        let allocatable = node_allocatable(&cfg, &node);
        let volumes = VolumeManager::new(client.clone(), cfg.root_dir.clone());
        volumes.set_node_allocatable(allocatable);
        let ctx = Arc::new(Ctx {
            cfg: cfg.clone(),
            client: client.clone(),
            runtime: runtime.clone(),
            recorder,
            volumes,
            probes,
            store: store.clone(),
            restart_backoff: Default::default(),
            pull_backoff: Default::default(),
            host_dns,
            node_ip: node.node_ip().to_string(),
            node: allocatable,
            runtime_name: version.runtime_name.clone(),
        });
        let dispatcher = Arc::new(Dispatcher {
            ctx: ctx.clone(),
            workers: Mutex::new(HashMap::new()),
            refs: Mutex::new(HashMap::new()),
            shutdown: shutdown.clone(),
        });

        // Probe results wake the pod's worker.
        let d = dispatcher.clone();
        tokio::spawn(async move {
            while let Some(uid) = probe_rx.recv().await {
                d.notify(&uid);
            }
        });

        // The pods bound to this node.
        let api: Api<Pod> = Api::all(client.clone());
        let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
        let d = dispatcher.clone();
        let stop = shutdown.clone();
        let synced = Arc::new(Notify::new());
        let synced2 = synced.clone();
        tokio::spawn(async move {
            let stream = watcher(api, wc).default_backoff().reflect(writer);
            futures::pin_mut!(stream);
            loop {
                let ev = tokio::select! {
                    ev = stream.next() => ev,
                    _ = stop.cancelled() => return,
                };
                match ev {
                    Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p))) => {
                        d.pod_seen(&p)
                    }
                    Some(Ok(watcher::Event::Delete(p))) => {
                        if let Some(uid) = p.metadata.uid.as_deref() {
                            d.notify(uid);
                        }
                    }
                    Some(Ok(watcher::Event::InitDone)) => synced2.notify_one(),
                    Some(Ok(watcher::Event::Init)) => {}
                    Some(Err(e)) => warn!(error = %e, "pod watch error"),
                    None => return,
                }
            }
        });

        tokio::spawn({
            let d = dispatcher.clone();
            crate::pleg::run(
                runtime.clone(),
                cfg.pleg_relist_period,
                move |uid| d.notify(uid),
                last_relist.clone(),
                shutdown.clone(),
            )
        });

        let metrics = crate::server::MetricsRegistry::default();
        register_metrics(&metrics, &dispatcher, &store);
        let server = tokio::spawn(crate::server::serve_with_metrics(
            crate::server::ServerState {
                config: cfg.clone(),
                runtime: runtime.clone(),
                pods: store.clone(),
            },
            metrics,
            shutdown.clone(),
        ));

        // Housekeeping once the pod list is known: adopt or clean what the runtime has.
        tokio::select! {
            _ = synced.notified() => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => break,
            }
            housekeeping(&dispatcher).await;
        }
        match server.await {
            Ok(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

/// Gauges read at scrape time: pods with a worker on this node, and pods in the cache.
fn register_metrics(
    metrics: &crate::server::MetricsRegistry,
    d: &Arc<Dispatcher>,
    store: &crate::PodStore,
) {
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::gauge::ConstGauge;

    #[derive(Debug)]
    struct Pods {
        d: std::sync::Weak<Dispatcher>,
        store: crate::PodStore,
    }
    impl Collector for Pods {
        fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let workers = self
                .d
                .upgrade()
                .map(|d| d.workers.lock().unwrap().len())
                .unwrap_or(0);
            let g = ConstGauge::new(workers as i64);
            g.encode(enc.encode_descriptor(
                "kubelet_running_pods",
                "Pods the kubelet has a worker for",
                None,
                g.metric_type(),
            )?)?;
            let g = ConstGauge::new(self.store.state().len() as i64);
            g.encode(enc.encode_descriptor(
                "kubelet_desired_pods",
                "Pods bound to this node in the kubelet's cache",
                None,
                g.metric_type(),
            )?)?;
            Ok(())
        }
    }
    metrics.lock().unwrap().register_collector(Box::new(Pods {
        d: Arc::downgrade(d),
        store: store.clone(),
    }));
}

async fn housekeeping(d: &Arc<Dispatcher>) {
    let live: HashSet<String> = d
        .ctx
        .store
        .state()
        .iter()
        .filter_map(|p| p.metadata.uid.clone())
        .collect();
    match worker::runtime_pod_uids(&*d.ctx.runtime).await {
        Ok(uids) => {
            for uid in uids.difference(&live.iter().cloned().collect()) {
                d.notify(uid);
            }
        }
        Err(e) => warn!(error = %e, "housekeeping: runtime list failed"),
    }
    for p in d.ctx.store.state() {
        if let Some(uid) = p.metadata.uid.as_deref() {
            if !d.workers.lock().unwrap().contains_key(uid) {
                d.pod_seen(&p);
            }
        }
    }
    d.ctx.volumes.cleanup_orphans(&live).await;
    let base = std::path::Path::new("/sys/fs/cgroup");
    let busy: HashSet<String> = d.workers.lock().unwrap().keys().cloned().collect();
    for (uid, parent) in crate::cgroups::pod_cgroups(base, &d.ctx.cfg.cgroup_root) {
        if !live.contains(&uid) && !busy.contains(&uid) {
            crate::cgroups::remove_pod_cgroup(base, &parent);
        }
    }
}
