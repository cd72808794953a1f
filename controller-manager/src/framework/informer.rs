//! Shared informers: one list+watch per kind for the whole process, an in-memory cache of it
//! (`kube` reflector [`Store`]), and a fan-out of change notifications to every subscriber.
//!
//! Guarantees: subscribers see every change in order, with the previous object on updates and
//! the last known object on deletes; a subscriber registered late first receives `Added` for
//! everything already cached. The watch re-lists after a 410 or an API server restart (kube's
//! watcher with backoff) and the re-list is diffed against the cache, so objects that vanished
//! meanwhile are delivered as `Deleted` and unchanged ones are not re-notified. `managedFields`
//! are dropped from cached objects, and cached Pods keep only what controllers read (see
//! [`trim_pod`]), to keep memory low; never write a cached object back with PUT, patch instead.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodSpec, PodStatus};
use kube::runtime::reflector::{store::Writer, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// What changed, as a subscriber sees it.
#[derive(Debug)]
pub enum Change<K> {
    Added(Arc<K>),
    Updated { old: Arc<K>, new: Arc<K> },
    Deleted(Arc<K>),
}

impl<K> Change<K> {
    /// The object after the change (the last known state for deletes).
    pub fn object(&self) -> &Arc<K> {
        match self {
            Change::Added(o) | Change::Deleted(o) => o,
            Change::Updated { new, .. } => new,
        }
    }

    /// The object before the change, for updates.
    pub fn old(&self) -> Option<&Arc<K>> {
        match self {
            Change::Updated { old, .. } => Some(old),
            _ => None,
        }
    }
}

/// A change handler. Runs on the informer's task: it must be quick (map to keys, enqueue).
pub type Handler<K> = Arc<dyn Fn(&Change<K>) + Send + Sync>;

/// The kinds an informer can be built for.
pub trait InformerKind:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}
impl<K> InformerKind for K where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

struct Shared<K: InformerKind> {
    handlers: RwLock<Vec<Handler<K>>>,
    synced: tokio::sync::watch::Sender<bool>,
}

/// A handle to the process-wide informer of kind `K`. Cheap to clone.
pub struct Informer<K: InformerKind> {
    store: Store<K>,
    shared: Arc<Shared<K>>,
}

impl<K: InformerKind> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<K: InformerKind> Informer<K> {
    /// The cache (all namespaces). Empty until [`Informer::wait_synced`] returns.
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// Register a change handler; it first gets `Added` for every object already cached.
    pub fn subscribe(&self, handler: impl Fn(&Change<K>) + Send + Sync + 'static) {
        let handler: Handler<K> = Arc::new(handler);
        let mut handlers = self
            .shared
            .handlers
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if self.has_synced() {
            for obj in self.store.state() {
                handler(&Change::Added(obj));
            }
        }
        handlers.push(handler);
    }

    /// Whether the first list has been loaded into the cache.
    pub fn has_synced(&self) -> bool {
        *self.shared.synced.borrow()
    }

    /// Wait until the first list is in the cache (or forever if the process is stopping).
    pub async fn wait_synced(&self) {
        let mut rx = self.shared.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// The cached object `name` in `namespace` (`None` for cluster-scoped kinds).
    pub fn get(&self, namespace: Option<&str>, name: &str) -> Option<Arc<K>> {
        let mut r = ObjectRef::<K>::new(name);
        if let Some(ns) = namespace {
            r = r.within(ns);
        }
        self.store.get(&r)
    }

    /// Every cached object in `namespace`.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.store
            .state_filter(|o| o.meta().namespace.as_deref() == Some(namespace))
    }

    fn start(client: Client, token: CancellationToken) -> Self {
        let writer: Writer<K> = Writer::default();
        let store = writer.as_reader();
        let (synced, _) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared {
            handlers: RwLock::new(Vec::new()),
            synced,
        });
        let informer = Self { store, shared };
        let me = informer.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = me.run(client, writer) => {}
            }
        });
        informer
    }

    async fn run(self, client: Client, mut writer: Writer<K>) {
        let api: Api<K> = Api::all(client);
        let stream = watcher(api, watcher::Config::default())
            .modify(|o: &mut K| trim(o))
            .default_backoff();
        futures::pin_mut!(stream);
        let kind = K::kind(&());
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => self.apply(&mut writer, ev),
                Err(e) => {
                    tracing::warn!(kind = %kind, error = %e, "watch failed; retrying with backoff")
                }
            }
        }
    }

    fn apply(&self, writer: &mut Writer<K>, ev: watcher::Event<K>) {
        let handlers = self
            .shared
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let notify = |c: Change<K>| {
            for h in handlers.iter() {
                h(&c);
            }
        };
        match &ev {
            watcher::Event::Apply(obj) => {
                let r = ObjectRef::from_obj(obj);
                let old = self.store.get(&r);
                writer.apply_watcher_event(&ev);
                if let Some(new) = self.store.get(&r) {
                    notify(match old {
                        Some(old) => Change::Updated { old, new },
                        None => Change::Added(new),
                    });
                }
            }
            watcher::Event::Delete(obj) => {
                let r = ObjectRef::from_obj(obj);
                let old = self.store.get(&r).unwrap_or_else(|| Arc::new(obj.clone()));
                writer.apply_watcher_event(&ev);
                notify(Change::Deleted(old));
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => writer.apply_watcher_event(&ev),
            watcher::Event::InitDone => {
                let before: HashMap<ObjectRef<K>, Arc<K>> = self
                    .store
                    .state()
                    .into_iter()
                    .map(|o| (ObjectRef::from_obj(&*o), o))
                    .collect();
                writer.apply_watcher_event(&ev);
                let after = self.store.state();
                let mut seen = std::collections::HashSet::with_capacity(after.len());
                for new in after {
                    let r = ObjectRef::from_obj(&*new);
                    match before.get(&r) {
                        Some(old) if old.meta().resource_version == new.meta().resource_version => {
                        }
                        Some(old) => notify(Change::Updated {
                            old: old.clone(),
                            new: new.clone(),
                        }),
                        None => notify(Change::Added(new.clone())),
                    }
                    seen.insert(r);
                }
                for (r, old) in before {
                    if !seen.contains(&r) {
                        notify(Change::Deleted(old));
                    }
                }
                self.shared.synced.send_replace(true);
            }
        }
    }
}

/// What every cached object loses before it is stored.
fn trim<K: InformerKind>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    if let Some(pod) = (obj as &mut dyn Any).downcast_mut::<Pod>() {
        trim_pod(pod);
    }
}

/// Reduce a cached Pod to what the controllers of this crate read: all metadata (but
/// `managedFields`), the scheduling and naming fields of the spec (`nodeName`, `hostname`,
/// `subdomain`, `restartPolicy`, `tolerations`), the containers that declare ports (named
/// target ports; of the init containers only restartable sidecars), reduced to name and
/// ports, and the status without container details except non-zero restart counts (the
/// scale-down rank). Images, commands, env, volumes, resources and probes are dropped: with
/// thousands of pods they were most of the cache (a `Container` alone is over 2 KiB inline).
pub fn trim_pod(pod: &mut Pod) {
    let slim = |c: &Container| {
        c.ports
            .as_ref()
            .filter(|p| !p.is_empty())
            .map(|ports| Container {
                name: c.name.clone(),
                ports: Some(ports.clone()),
                restart_policy: c.restart_policy.clone(),
                ..Default::default()
            })
    };
    if let Some(spec) = pod.spec.take() {
        let sidecars: Vec<Container> = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"))
            .filter_map(slim)
            .collect();
        pod.spec = Some(PodSpec {
            containers: spec.containers.iter().filter_map(slim).collect(),
            init_containers: (!sidecars.is_empty()).then_some(sidecars),
            node_name: spec.node_name,
            hostname: spec.hostname,
            subdomain: spec.subdomain,
            restart_policy: spec.restart_policy,
            tolerations: spec.tolerations,
            ..Default::default()
        });
    }
    if let Some(st) = pod.status.take() {
        let restarted: Vec<ContainerStatus> = st
            .container_statuses
            .iter()
            .flatten()
            .filter(|c| c.restart_count > 0)
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                restart_count: c.restart_count,
                ..Default::default()
            })
            .collect();
        pod.status = Some(PodStatus {
            phase: st.phase,
            conditions: st.conditions,
            reason: st.reason,
            pod_ip: st.pod_ip,
            pod_ips: st.pod_ips,
            container_statuses: (!restarted.is_empty()).then_some(restarted),
            ..Default::default()
        });
    }
}

/// Hands out one [`Informer`] per kind; the first request starts its watch.
#[derive(Clone)]
pub struct InformerFactory {
    client: Client,
    token: CancellationToken,
    informers: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
}

impl InformerFactory {
    /// Informers stop when `token` is cancelled.
    pub fn new(client: Client, token: CancellationToken) -> Self {
        Self {
            client,
            token,
            informers: Arc::default(),
        }
    }

    /// The shared informer of kind `K` (cluster-wide), started on first use.
    pub fn informer<K: InformerKind>(&self) -> Informer<K> {
        let mut map = self.informers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = map
            .get(&TypeId::of::<K>())
            .and_then(|b| b.downcast_ref::<Informer<K>>())
        {
            return i.clone();
        }
        let i = Informer::<K>::start(self.client.clone(), self.token.clone());
        map.insert(TypeId::of::<K>(), Box::new(i.clone()));
        i
    }

    /// The informer of kind `K` if something already started it (never starts one).
    pub fn existing<K: InformerKind>(&self) -> Option<Informer<K>> {
        self.informers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&TypeId::of::<K>())
            .and_then(|b| b.downcast_ref::<Informer<K>>())
            .cloned()
    }

    /// How many kinds are being watched (one watch each).
    pub fn watched_kinds(&self) -> usize {
        self.informers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerPort, PodCondition, Toleration};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn port(name: &str, n: i32) -> ContainerPort {
        ContainerPort {
            name: Some(name.into()),
            container_port: n,
            ..Default::default()
        }
    }

    #[test]
    fn trimmed_pod_keeps_what_controllers_read() {
        let c = |name: &str, ports: Option<Vec<ContainerPort>>, rp: Option<&str>| Container {
            name: name.into(),
            image: Some("nginx".into()),
            ports,
            restart_policy: rp.map(Into::into),
            ..Default::default()
        };
        let mut pod = Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                labels: Some([("app".to_string(), "a".to_string())].into()),
                managed_fields: Some(vec![Default::default()]),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![
                    c("web", Some(vec![port("http", 80)]), None),
                    c("log", None, None),
                ],
                init_containers: Some(vec![
                    c("side", Some(vec![port("metrics", 9090)]), Some("Always")),
                    c("init", Some(vec![port("x", 1)]), None),
                ]),
                node_name: Some("n1".into()),
                hostname: Some("h".into()),
                subdomain: Some("s".into()),
                restart_policy: Some("Never".into()),
                tolerations: Some(vec![Toleration::default()]),
                service_account_name: Some("default".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                pod_ip: Some("10.0.0.1".into()),
                container_statuses: Some(vec![
                    ContainerStatus {
                        name: "web".into(),
                        restart_count: 3,
                        image: "nginx".into(),
                        ..Default::default()
                    },
                    ContainerStatus {
                        name: "log".into(),
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
        };
        trim(&mut pod);
        assert_eq!(pod.metadata.managed_fields, None);
        assert_eq!(pod.metadata.labels.as_ref().map(|l| l.len()), Some(1));
        let spec = pod.spec.as_ref().unwrap();
        let names = |cs: &[Container]| cs.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&spec.containers), ["web"]);
        assert_eq!(spec.containers[0].image, None);
        assert_eq!(spec.containers[0].ports, Some(vec![port("http", 80)]));
        assert_eq!(names(spec.init_containers.as_deref().unwrap()), ["side"]);
        assert_eq!(spec.node_name.as_deref(), Some("n1"));
        assert_eq!(spec.hostname.as_deref(), Some("h"));
        assert_eq!(spec.subdomain.as_deref(), Some("s"));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        assert_eq!(spec.tolerations.as_ref().map(Vec::len), Some(1));
        assert_eq!(spec.service_account_name, None);
        let st = pod.status.as_ref().unwrap();
        assert_eq!(st.phase.as_deref(), Some("Running"));
        assert_eq!(st.conditions.as_ref().map(Vec::len), Some(1));
        assert_eq!(st.pod_ip.as_deref(), Some("10.0.0.1"));
        let cs = st.container_statuses.as_ref().unwrap();
        assert_eq!(
            (cs.len(), cs[0].restart_count, cs[0].image.as_str()),
            (1, 3, "")
        );
    }
}
