//! The scheduling queue: an active heap (higher priority first, then earlier arrival), a
//! backoff heap (per-pod exponential backoff from 1 s doubling to 10 s) and an unschedulable
//! pool that is only drained by cluster events that may help ([`ClusterEvent`]) — nothing is
//! polled while nothing changes.
//!
//! A pod is in exactly one place: active, backoff, unschedulable (or gated), or in flight
//! between [`SchedulingQueue::pop`] and its outcome. A failure reported for a cycle that a move
//! request overtook goes to backoff, not unschedulable, so an event that arrived while the pod
//! was being scheduled is not lost (upstream `moveRequestCycle`).

use crate::cache::PodInfo;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A change in the cluster that can make unschedulable pods fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    NodeAdd,
    /// Labels, taints, allocatable or unschedulable of a node changed.
    NodeUpdate,
    /// An assigned pod was deleted (frees resources, ports, spread/affinity domains).
    AssignedPodDelete,
    /// An assigned pod's labels changed (affinity and spreading).
    AssignedPodUpdate,
    /// A PVC or PV was added or changed.
    VolumeChange,
}

impl ClusterEvent {
    /// Whether this event can turn a rejection by `plugin` into a fit (upstream queueing
    /// hints, coarsened to the plugin level).
    pub fn may_help(self, plugin: &str) -> bool {
        use crate::plugins::*;
        match self {
            ClusterEvent::NodeAdd => true,
            ClusterEvent::NodeUpdate => {
                plugin != volume_binding::NAME && plugin != node_ports::NAME
            }
            ClusterEvent::AssignedPodDelete => [
                resources_fit::NAME,
                node_ports::NAME,
                inter_pod_affinity::NAME,
                topology_spread::NAME,
                "Preemption",
            ]
            .contains(&plugin),
            ClusterEvent::AssignedPodUpdate => {
                [inter_pod_affinity::NAME, topology_spread::NAME].contains(&plugin)
            }
            ClusterEvent::VolumeChange => plugin == volume_binding::NAME,
        }
    }
}

/// A pod in the queue with its scheduling history.
#[derive(Clone, Debug)]
pub struct QueuedPod {
    pub info: Arc<PodInfo>,
    /// Scheduling attempts so far.
    pub attempts: u32,
    /// When the pod first entered the queue (for latency metrics).
    pub initial: Instant,
    /// Plugins that rejected it in its last attempt.
    pub unschedulable_plugins: Vec<&'static str>,
    last_failure: Option<Instant>,
}

impl QueuedPod {
    pub fn new(info: Arc<PodInfo>) -> Self {
        QueuedPod {
            info,
            attempts: 0,
            initial: Instant::now(),
            unschedulable_plugins: Vec::new(),
            last_failure: None,
        }
    }

    /// 1 s doubling per failed attempt, capped at 10 s.
    pub fn backoff(&self) -> Duration {
        let exp = self.attempts.saturating_sub(1).min(10);
        (INITIAL_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF)
    }

    fn backoff_expiry(&self) -> Option<Instant> {
        self.last_failure.map(|t| t + self.backoff())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Active(u64),
    Backoff(u64),
    Unschedulable,
    Gated,
    InFlight,
}

#[derive(PartialEq, Eq)]
struct ActiveEntry {
    priority: i32,
    seq: u64,
    key: String,
}

impl Ord for ActiveEntry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.priority
            .cmp(&o.priority)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}
impl PartialOrd for ActiveEntry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

#[derive(Default)]
struct Inner {
    pods: HashMap<String, (QueuedPod, Place)>,
    active: BinaryHeap<ActiveEntry>,
    backoff: BinaryHeap<Reverse<(Instant, u64, String)>>,
    seq: u64,
    cycle: u64,
    move_request_cycle: u64,
    /// Updates that arrived while their pod was in flight.
    pending_update: HashMap<String, Arc<PodInfo>>,
}

/// Queue sizes for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sizes {
    pub active: usize,
    pub backoff: usize,
    pub unschedulable: usize,
    pub gated: usize,
}

/// The three-pool queue; [`SchedulingQueue::pop`] waits without polling.
#[derive(Default)]
pub struct SchedulingQueue {
    inner: Mutex<Inner>,
    notify: Notify,
}

impl Inner {
    fn push_active(&mut self, key: &str) {
        self.seq += 1;
        let seq = self.seq;
        if let Some((qp, place)) = self.pods.get_mut(key) {
            *place = Place::Active(seq);
            self.active.push(ActiveEntry {
                priority: qp.info.priority,
                seq,
                key: key.to_string(),
            });
        }
    }

    fn push_backoff(&mut self, key: &str, expiry: Instant) {
        self.seq += 1;
        let seq = self.seq;
        if let Some((_, place)) = self.pods.get_mut(key) {
            *place = Place::Backoff(seq);
            self.backoff.push(Reverse((expiry, seq, key.to_string())));
        }
    }

    /// Move pods whose backoff expired to active; returns the next expiry.
    fn flush_backoff(&mut self, now: Instant) -> Option<Instant> {
        while let Some(Reverse((t, seq, key))) = self.backoff.peek().cloned() {
            let valid = matches!(self.pods.get(&key), Some((_, Place::Backoff(s))) if *s == seq);
            if !valid {
                self.backoff.pop();
                continue;
            }
            if t > now {
                return Some(t);
            }
            self.backoff.pop();
            self.push_active(&key);
        }
        None
    }

    /// Back to active or, while backing off, to the backoff heap.
    fn requeue(&mut self, key: &str, now: Instant) {
        let expiry = self.pods.get(key).and_then(|(qp, _)| qp.backoff_expiry());
        match expiry {
            Some(t) if t > now => self.push_backoff(key, t),
            _ => self.push_active(key),
        }
    }
}

impl SchedulingQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new or updated pending pod.
    pub fn add(&self, info: Arc<PodInfo>) {
        let mut g = self.inner.lock().expect("queue lock");
        let key = info.key.clone();
        let gated = info.scheduling_gated;
        let now = Instant::now();
        match g.pods.get_mut(&key) {
            None => {
                g.pods
                    .insert(key.clone(), (QueuedPod::new(info), Place::Gated));
                if !gated {
                    g.push_active(&key);
                }
            }
            Some((_, Place::InFlight)) => {
                g.pending_update.insert(key, info);
                return;
            }
            Some((qp, place)) => {
                let changed = qp.info.fingerprint != info.fingerprint;
                qp.info = info;
                match *place {
                    Place::Gated if !gated => g.push_active(&key),
                    Place::Unschedulable if changed => g.requeue(&key, now),
                    Place::Active(_) if gated => {
                        if let Some(e) = g.pods.get_mut(&key) {
                            e.1 = Place::Gated;
                        }
                    }
                    _ => {}
                }
            }
        }
        drop(g);
        self.notify.notify_one();
    }

    pub fn delete(&self, key: &str) {
        let mut g = self.inner.lock().expect("queue lock");
        g.pods.remove(key);
        g.pending_update.remove(key);
    }

    pub fn contains(&self, key: &str) -> bool {
        self.inner
            .lock()
            .expect("queue lock")
            .pods
            .contains_key(key)
    }

    /// The next pod to schedule and its scheduling cycle; waits until one is active or a
    /// backoff expires. `None` once `cancel` fires.
    pub async fn pop(
        &self,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Option<(QueuedPod, u64)> {
        loop {
            let next_expiry = {
                let mut g = self.inner.lock().expect("queue lock");
                let next = g.flush_backoff(Instant::now());
                while let Some(e) = g.active.pop() {
                    let valid =
                        matches!(g.pods.get(&e.key), Some((_, Place::Active(s))) if *s == e.seq);
                    if !valid {
                        continue;
                    }
                    g.cycle += 1;
                    let cycle = g.cycle;
                    let entry = g.pods.get_mut(&e.key).expect("checked above");
                    entry.1 = Place::InFlight;
                    entry.0.attempts += 1;
                    return Some((entry.0.clone(), cycle));
                }
                next
            };
            let sleep = async {
                match next_expiry {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = self.notify.notified() => {}
                _ = sleep => {}
            }
        }
    }

    /// The pod was bound (or vanished): forget it.
    pub fn done(&self, key: &str) {
        let mut g = self.inner.lock().expect("queue lock");
        if matches!(g.pods.get(key), Some((_, Place::InFlight))) {
            g.pods.remove(key);
        }
        g.pending_update.remove(key);
    }

    /// The pod did not fit in `cycle`: park it until an event may help (or back off if one
    /// already arrived since the cycle began, or the pod changed meanwhile).
    pub fn add_unschedulable(&self, mut qp: QueuedPod, cycle: u64, plugins: Vec<&'static str>) {
        let mut g = self.inner.lock().expect("queue lock");
        let key = qp.info.key.clone();
        if !matches!(g.pods.get(&key), Some((_, Place::InFlight))) {
            return; // deleted while in flight
        }
        let now = Instant::now();
        qp.last_failure = Some(now);
        qp.unschedulable_plugins = plugins;
        let updated = g.pending_update.remove(&key);
        if let Some(u) = &updated {
            qp.info = u.clone();
        }
        let move_since = g.move_request_cycle >= cycle;
        g.pods.insert(key.clone(), (qp, Place::Unschedulable));
        if move_since || updated.is_some() {
            g.requeue(&key, now);
            drop(g);
            self.notify.notify_one();
        }
    }

    /// An error (binding failed, API error): retry after backoff.
    pub fn add_backoff(&self, mut qp: QueuedPod) {
        let mut g = self.inner.lock().expect("queue lock");
        let key = qp.info.key.clone();
        if !matches!(g.pods.get(&key), Some((_, Place::InFlight))) {
            return;
        }
        let now = Instant::now();
        qp.last_failure = Some(now);
        if let Some(u) = g.pending_update.remove(&key) {
            qp.info = u;
        }
        let expiry = qp.backoff_expiry().unwrap_or(now);
        g.pods.insert(key.clone(), (qp, Place::Unschedulable));
        g.push_backoff(&key, expiry);
        drop(g);
        self.notify.notify_one();
    }

    /// Move unschedulable pods the event may help to active (or backoff).
    pub fn move_all(&self, event: ClusterEvent) -> usize {
        let mut g = self.inner.lock().expect("queue lock");
        g.move_request_cycle = g.cycle;
        let keys: Vec<String> = g
            .pods
            .iter()
            .filter(|(_, (qp, p))| {
                *p == Place::Unschedulable
                    && (qp.unschedulable_plugins.is_empty()
                        || qp.unschedulable_plugins.iter().any(|pl| event.may_help(pl)))
            })
            .map(|(k, _)| k.clone())
            .collect();
        let now = Instant::now();
        for k in &keys {
            g.requeue(k, now);
        }
        drop(g);
        if !keys.is_empty() {
            self.notify.notify_one();
        }
        keys.len()
    }

    /// Keys of every pod the queue holds (for reconciling after a relist).
    pub fn keys(&self) -> Vec<String> {
        self.inner
            .lock()
            .expect("queue lock")
            .pods
            .keys()
            .cloned()
            .collect()
    }

    pub fn sizes(&self) -> Sizes {
        let g = self.inner.lock().expect("queue lock");
        let mut s = Sizes::default();
        for (_, p) in g.pods.values() {
            match p {
                Place::Active(_) | Place::InFlight => s.active += 1,
                Place::Backoff(_) => s.backoff += 1,
                Place::Unschedulable => s.unschedulable += 1,
                Place::Gated => s.gated += 1,
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    fn info(name: &str, priority: i32) -> Arc<PodInfo> {
        Arc::new(PodInfo {
            key: format!("d/{name}"),
            name: name.into(),
            namespace: "d".into(),
            priority,
            ..Default::default()
        })
    }

    async fn pop(q: &SchedulingQueue) -> (QueuedPod, u64) {
        q.pop(&CancellationToken::new()).await.expect("a pod")
    }

    #[tokio::test]
    async fn active_pods_pop_by_priority_then_arrival() {
        let q = SchedulingQueue::new();
        q.add(info("low", 0));
        q.add(info("high", 1000));
        q.add(info("low2", 0));
        q.add(info("mid", 10));
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push(pop(&q).await.0.info.name.clone());
        }
        assert_eq!(order, ["high", "mid", "low", "low2"]);
    }

    #[test]
    fn backoff_doubles_from_one_to_ten_seconds() {
        let mut qp = QueuedPod::new(info("p", 0));
        let got: Vec<u64> = (1..=6)
            .map(|a| {
                qp.attempts = a;
                qp.backoff().as_secs()
            })
            .collect();
        assert_eq!(got, [1, 2, 4, 8, 10, 10]);
    }

    #[tokio::test(start_paused = true)]
    async fn unschedulable_pods_wait_for_a_helpful_event_then_back_off() {
        let q = SchedulingQueue::new();
        q.add(info("p", 0));
        let (qp, cycle) = pop(&q).await;
        q.add_unschedulable(qp, cycle, vec![crate::plugins::node_affinity::NAME]);
        assert_eq!(q.sizes().unschedulable, 1);
        // A pod deletion cannot help a node-affinity rejection.
        assert_eq!(q.move_all(ClusterEvent::AssignedPodDelete), 0);
        assert_eq!(q.sizes().unschedulable, 1);
        // A node update can; the pod is still backing off (1 s), so it goes to backoff.
        assert_eq!(q.move_all(ClusterEvent::NodeUpdate), 1);
        assert_eq!(q.sizes().backoff, 1);
        let t0 = Instant::now();
        let (qp, _) = pop(&q).await;
        assert!(
            Instant::now() - t0 >= Duration::from_millis(999),
            "popped before backoff expired"
        );
        assert_eq!(qp.attempts, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_during_the_cycle_sends_the_failure_to_backoff() {
        let q = SchedulingQueue::new();
        q.add(info("p", 0));
        let (qp, cycle) = pop(&q).await;
        q.move_all(ClusterEvent::NodeAdd);
        q.add_unschedulable(qp, cycle, vec![crate::plugins::node_affinity::NAME]);
        assert_eq!(
            q.sizes(),
            Sizes {
                backoff: 1,
                ..Default::default()
            }
        );
    }

    #[tokio::test]
    async fn status_only_updates_do_not_requeue_unschedulable_pods() {
        let q = SchedulingQueue::new();
        q.add(info("p", 0));
        let (qp, cycle) = pop(&q).await;
        q.add_unschedulable(qp, cycle, vec!["NodeAffinity"]);
        q.add(info("p", 0));
        assert_eq!(q.sizes().unschedulable, 1);
        let mut changed = (*info("p", 0)).clone();
        changed.fingerprint = 42;
        q.add(Arc::new(changed));
        assert_eq!(
            q.sizes().unschedulable + q.sizes().backoff + q.sizes().active,
            1
        );
        assert_eq!(q.sizes().unschedulable, 0);
    }

    #[tokio::test]
    async fn deleted_pods_leave_and_gated_pods_wait() {
        let q = SchedulingQueue::new();
        let mut gated = (*info("g", 0)).clone();
        gated.scheduling_gated = true;
        q.add(Arc::new(gated.clone()));
        q.add(info("x", 0));
        q.delete("d/x");
        assert_eq!(
            q.sizes(),
            Sizes {
                gated: 1,
                ..Default::default()
            }
        );
        gated.scheduling_gated = false;
        q.add(Arc::new(gated));
        assert_eq!(pop(&q).await.0.info.name, "g");
    }
}
