//! Informers: kube-runtime watchers (list, then watch; re-list after errors or an API server
//! restart) feeding the [`Cache`](crate::cache::Cache) and the queue.
//!
//! Pods are converted to compact [`PodInfo`]s as they arrive; full objects are not retained.
//! Assigned pods go to the cache, pending pods for this scheduler to the queue. After every
//! (re-)list, objects that disappeared meanwhile are removed. [`Synced`] reports when every
//! informer has completed its first list, before which nothing is scheduled.

use crate::binder::Binder;
use crate::cache::{NodeChange, PodInfo};
use crate::preemption::Pdb;
use crate::queue::ClusterEvent;
use crate::scheduler::Scheduler;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Counts informers that completed their first list.
#[derive(Clone)]
pub struct Synced {
    tx: Arc<watch::Sender<usize>>,
    total: usize,
}

impl Synced {
    fn new(total: usize) -> Self {
        Synced {
            tx: Arc::new(watch::channel(0).0),
            total,
        }
    }
    fn mark(&self) {
        self.tx.send_modify(|n| *n += 1);
    }
    pub fn is_synced(&self) -> bool {
        *self.tx.borrow() >= self.total
    }
    /// Wait until all informers listed once; false if cancelled first.
    pub async fn wait(&self, cancel: &CancellationToken) -> bool {
        let mut rx = self.tx.subscribe();
        let total = self.total;
        tokio::select! {
            r = rx.wait_for(|n| *n >= total) => r.is_ok(),
            _ = cancel.cancelled() => false,
        }
    }
}

fn key_of<K: Resource>(o: &K) -> String {
    let m = o.meta();
    match &m.namespace {
        Some(ns) => format!("{ns}/{}", m.name.as_deref().unwrap_or("")),
        None => m.name.clone().unwrap_or_default(),
    }
}

/// Drive one watcher, calling `apply`/`delete` per object and `relisted` with every key seen
/// in a (re-)list.
async fn drive<K, S>(
    stream: S,
    cancel: CancellationToken,
    synced: Synced,
    mut apply: impl FnMut(K),
    mut delete: impl FnMut(K),
    mut relisted: impl FnMut(HashSet<String>),
) where
    K: Resource + Clone + std::fmt::Debug + Send + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send,
{
    let mut stream = std::pin::pin!(stream);
    let mut seen: Option<HashSet<String>> = None;
    let mut first = true;
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = stream.next() => ev,
        };
        match ev {
            None => return,
            Some(Err(e)) => {
                tracing::warn!(kind = std::any::type_name::<K>(), error = %e, "watch failed; re-listing")
            }
            Some(Ok(Event::Init)) => seen = Some(HashSet::new()),
            Some(Ok(Event::InitApply(o))) => {
                if let Some(s) = seen.as_mut() {
                    s.insert(key_of(&o));
                }
                apply(o);
            }
            Some(Ok(Event::InitDone)) => {
                relisted(seen.take().unwrap_or_default());
                if first {
                    first = false;
                    synced.mark();
                }
            }
            Some(Ok(Event::Apply(o))) => apply(o),
            Some(Ok(Event::Delete(o))) => delete(o),
        }
    }
}

fn watch<K>(
    client: &Client,
    cfg: watcher::Config,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + 'static,
{
    watcher::watcher(Api::<K>::all(client.clone()), cfg).default_backoff()
}

/// Start every informer; returns when all stop (on cancellation).
pub async fn run<B: Binder>(
    client: Client,
    sched: Arc<Scheduler<B>>,
    synced: Synced,
    cancel: CancellationToken,
) {
    let priorities: Arc<Mutex<PriorityClasses>> = Arc::default();
    let pods = {
        let (s, p) = (sched.clone(), priorities.clone());
        let (s2, s3) = (sched.clone(), sched.clone());
        let cfg = watcher::Config::default().fields("status.phase!=Succeeded,status.phase!=Failed");
        drive(
            watch::<Pod>(&client, cfg),
            cancel.clone(),
            synced.clone(),
            move |pod| on_pod(&s, &p, pod),
            move |pod| on_pod_delete(&s2, &pod),
            move |seen| relist_pods(&s3, seen),
        )
    };
    let nodes = {
        let (s, s2, s3) = (sched.clone(), sched.clone(), sched.clone());
        drive(
            watch::<Node>(&client, watcher::Config::default()),
            cancel.clone(),
            synced.clone(),
            move |n| {
                let change = s.cache.lock().expect("cache lock").add_or_update_node(&n);
                match change {
                    NodeChange::Added => s.queue.move_all(ClusterEvent::NodeAdd),
                    NodeChange::Relevant => s.queue.move_all(ClusterEvent::NodeUpdate),
                    NodeChange::Irrelevant => 0,
                };
            },
            move |n| {
                s2.cache
                    .lock()
                    .expect("cache lock")
                    .remove_node(n.metadata.name.as_deref().unwrap_or(""))
            },
            move |seen| {
                let mut c = s3.cache.lock().expect("cache lock");
                for name in c.node_names() {
                    if !seen.contains(&name) {
                        c.remove_node(&name);
                    }
                }
            },
        )
    };
    let pvcs = {
        let (s, s2, s3) = (sched.clone(), sched.clone(), sched.clone());
        drive(
            watch::<PersistentVolumeClaim>(&client, watcher::Config::default()),
            cancel.clone(),
            synced.clone(),
            move |o| {
                s.cache
                    .lock()
                    .expect("cache lock")
                    .volumes
                    .pvcs
                    .insert(key_of(&o), Arc::new(o));
                s.queue.move_all(ClusterEvent::VolumeChange);
            },
            move |o| {
                s2.cache
                    .lock()
                    .expect("cache lock")
                    .volumes
                    .pvcs
                    .remove(&key_of(&o));
            },
            move |seen| {
                s3.cache
                    .lock()
                    .expect("cache lock")
                    .volumes
                    .pvcs
                    .retain(|k, _| seen.contains(k))
            },
        )
    };
    let pvs = {
        let (s, s2, s3) = (sched.clone(), sched.clone(), sched.clone());
        drive(
            watch::<PersistentVolume>(&client, watcher::Config::default()),
            cancel.clone(),
            synced.clone(),
            move |o| {
                s.cache
                    .lock()
                    .expect("cache lock")
                    .volumes
                    .pvs
                    .insert(key_of(&o), Arc::new(o));
                s.queue.move_all(ClusterEvent::VolumeChange);
            },
            move |o| {
                s2.cache
                    .lock()
                    .expect("cache lock")
                    .volumes
                    .pvs
                    .remove(&key_of(&o));
            },
            move |seen| {
                s3.cache
                    .lock()
                    .expect("cache lock")
                    .volumes
                    .pvs
                    .retain(|k, _| seen.contains(k))
            },
        )
    };
    let pdbs = {
        let (s, s2, s3) = (sched.clone(), sched.clone(), sched.clone());
        drive(
            watch::<PodDisruptionBudget>(&client, watcher::Config::default()),
            cancel.clone(),
            synced.clone(),
            move |o| {
                s.cache
                    .lock()
                    .expect("cache lock")
                    .pdbs
                    .insert(key_of(&o), Pdb::from_api(&o));
            },
            move |o| {
                s2.cache
                    .lock()
                    .expect("cache lock")
                    .pdbs
                    .remove(&key_of(&o));
            },
            move |seen| {
                s3.cache
                    .lock()
                    .expect("cache lock")
                    .pdbs
                    .retain(|k, _| seen.contains(k))
            },
        )
    };
    let pcs = {
        let (p, p2, p3) = (priorities.clone(), priorities.clone(), priorities.clone());
        drive(
            watch::<PriorityClass>(&client, watcher::Config::default()),
            cancel.clone(),
            synced.clone(),
            move |o| p.lock().expect("priorities lock").apply(&o),
            move |o| {
                p2.lock()
                    .expect("priorities lock")
                    .classes
                    .remove(o.metadata.name.as_deref().unwrap_or(""));
            },
            move |seen| {
                p3.lock()
                    .expect("priorities lock")
                    .classes
                    .retain(|k, _| seen.contains(k))
            },
        )
    };
    futures::join!(pods, nodes, pvcs, pvs, pdbs, pcs);
}

/// How many informers [`run`] starts (for [`Synced`]).
pub const INFORMERS: usize = 6;

pub fn synced() -> Synced {
    Synced::new(INFORMERS)
}

/// PriorityClass values, for pods created before admission resolved their priority.
#[derive(Default)]
struct PriorityClasses {
    classes: HashMap<String, (i32, bool)>,
}

impl PriorityClasses {
    fn apply(&mut self, pc: &PriorityClass) {
        self.classes.insert(
            pc.metadata.name.clone().unwrap_or_default(),
            (pc.value.unwrap_or(0), pc.global_default.unwrap_or(false)),
        );
    }
    fn resolve(&self, pod: &Pod) -> Option<i32> {
        let spec = pod.spec.as_ref()?;
        if spec.priority.is_some() {
            return None;
        }
        match spec
            .priority_class_name
            .as_deref()
            .filter(|n| !n.is_empty())
        {
            Some(n) => self.classes.get(n).map(|(v, _)| *v),
            None => self.classes.values().find(|(_, d)| *d).map(|(v, _)| *v),
        }
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

fn on_pod<B: Binder>(s: &Scheduler<B>, priorities: &Mutex<PriorityClasses>, pod: Pod) {
    if is_terminal(&pod) {
        on_pod_delete(s, &pod);
        return;
    }
    let mut info = PodInfo::from_pod(&pod);
    if let Some(p) = priorities.lock().expect("priorities lock").resolve(&pod) {
        info.priority = p;
    }
    if info.node_name.is_some() {
        let labels_changed = s
            .cache
            .lock()
            .expect("cache lock")
            .add_or_update_pod(info.clone());
        s.queue.delete(&info.key);
        if labels_changed {
            s.queue.move_all(ClusterEvent::AssignedPodUpdate);
        }
    } else if info.scheduler_name == s.name && !info.terminating {
        if !s.cache.lock().expect("cache lock").is_assumed(&info.key) {
            s.queue.add(Arc::new(info));
        }
    } else {
        s.queue.delete(&info.key);
    }
}

fn on_pod_delete<B: Binder>(s: &Scheduler<B>, pod: &Pod) {
    let key = crate::cache::pod_key(pod);
    let removed = {
        let mut c = s.cache.lock().expect("cache lock");
        c.forget_pod(&key);
        c.remove_pod(&key)
    };
    s.queue.delete(&key);
    if removed {
        s.queue.move_all(ClusterEvent::AssignedPodDelete);
    }
}

fn relist_pods<B: Binder>(s: &Scheduler<B>, seen: HashSet<String>) {
    let gone: Vec<String> = {
        let mut c = s.cache.lock().expect("cache lock");
        let gone: Vec<String> = c
            .observed_pod_keys()
            .into_iter()
            .filter(|k| !seen.contains(k))
            .collect();
        for k in &gone {
            c.remove_pod(k);
        }
        gone
    };
    for k in s.queue.keys() {
        if !seen.contains(&k) {
            s.queue.delete(&k);
        }
    }
    if !gone.is_empty() {
        s.queue.move_all(ClusterEvent::AssignedPodDelete);
    }
}
