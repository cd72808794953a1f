//! The scheduling loop: pop a pod, decide against the cache (pure), assume it, and bind
//! asynchronously; on failure try preemption, record FailedScheduling and the PodScheduled
//! condition, and park the pod in the queue.
//!
//! Decisions are serial (one cycle at a time holds the cache lock, so each sees every earlier
//! assumption); bindings and events run concurrently, bounded by a semaphore and a bounded
//! event channel (events are dropped rather than stalling scheduling, as upstream's
//! broadcaster does).

use crate::binder::{BindError, Binder, PodEvent};
use crate::cache::{Cache, PodInfo};
use crate::framework::{FitError, Framework, Rotor};
use crate::metrics::{AttemptResult, Metrics};
use crate::preemption::{self, Plan};
use crate::queue::{QueuedPod, SchedulingQueue};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

const EVENT_BUFFER: usize = 10_000;
const EVENT_WORKERS: usize = 8;

/// Shared scheduler state: the cache and queue the informers feed, the framework, the writer.
pub struct Scheduler<B: Binder> {
    pub name: String,
    pub cache: Arc<Mutex<Cache>>,
    pub queue: Arc<SchedulingQueue>,
    pub framework: Framework,
    pub binder: Arc<B>,
    pub metrics: Arc<Metrics>,
    binds: Arc<Semaphore>,
    parallel_binds: usize,
    events_tx: mpsc::Sender<PodEvent>,
    events_rx: Mutex<Option<mpsc::Receiver<PodEvent>>>,
}

/// What one cycle decided (for callers that drive cycles themselves).
#[derive(Debug)]
pub enum Outcome {
    Scheduled(String),
    Unschedulable(String),
    Skipped,
}

impl<B: Binder> Scheduler<B> {
    pub fn new(name: &str, framework: Framework, binder: B, parallel_binds: usize) -> Self {
        let (events_tx, events_rx) = mpsc::channel(EVENT_BUFFER);
        Scheduler {
            name: name.to_string(),
            cache: Arc::new(Mutex::new(Cache::new())),
            queue: Arc::new(SchedulingQueue::new()),
            framework,
            binder: Arc::new(binder),
            metrics: Arc::new(Metrics::new(name)),
            binds: Arc::new(Semaphore::new(parallel_binds.max(1))),
            parallel_binds: parallel_binds.max(1),
            events_tx,
            events_rx: Mutex::new(Some(events_rx)),
        }
    }

    fn emit(&self, ev: PodEvent) {
        if self.events_tx.try_send(ev).is_err() {
            debug!("event buffer full; event dropped");
        }
    }

    /// Start the event writers (once).
    fn start_event_workers(&self, cancel: &CancellationToken) {
        let Some(rx) = self.events_rx.lock().expect("events lock").take() else {
            return;
        };
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..EVENT_WORKERS {
            let (rx, binder, cancel) = (rx.clone(), self.binder.clone(), cancel.clone());
            tokio::spawn(async move {
                loop {
                    let ev = tokio::select! {
                        _ = cancel.cancelled() => return,
                        ev = async { rx.lock().await.recv().await } => ev,
                    };
                    match ev {
                        Some(ev) => binder.event(ev).await,
                        None => return,
                    }
                }
            });
        }
    }

    /// Schedule until cancelled, then wait for in-flight bindings.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        self.start_event_workers(&cancel);
        let mut rotor = Rotor::default();
        while let Some((qp, cycle)) = self.queue.pop(&cancel).await {
            self.schedule_one(qp, cycle, &mut rotor).await;
        }
        let _ = self.binds.acquire_many(self.parallel_binds as u32).await;
    }

    /// One scheduling cycle for a popped pod.
    pub async fn schedule_one(
        self: &Arc<Self>,
        qp: QueuedPod,
        cycle: u64,
        rotor: &mut Rotor,
    ) -> Outcome {
        let start = Instant::now();
        let pod = qp.info.clone();
        let decided = {
            let mut cache = self.cache.lock().expect("cache lock");
            if cache.is_assumed(&pod.key) {
                None
            } else {
                Some(match self.framework.schedule(&pod, &cache, rotor) {
                    Ok(d) => {
                        cache.assume_pod(&pod, &d.node);
                        Ok(d.node)
                    }
                    Err(mut fit) => match preemption::find(&self.framework, &pod, &cache, &fit) {
                        Ok(plan) => Err((fit, Some(plan))),
                        Err(msg) => {
                            fit.post_filter_msg = msg;
                            Err((fit, None))
                        }
                    },
                })
            }
        };
        match decided {
            None => {
                self.queue.done(&pod.key);
                Outcome::Skipped
            }
            Some(Ok(node)) => {
                self.metrics
                    .attempt(AttemptResult::Scheduled, start.elapsed());
                let permit = self
                    .binds
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("bind semaphore open");
                let this = self.clone();
                let node2 = node.clone();
                tokio::spawn(async move {
                    this.bind(qp, &node2).await;
                    drop(permit);
                });
                Outcome::Scheduled(node)
            }
            Some(Err((fit, plan))) => {
                self.metrics
                    .attempt(AttemptResult::Unschedulable, start.elapsed());
                let msg = self.fail(qp, cycle, *fit, plan);
                Outcome::Unschedulable(msg)
            }
        }
    }

    async fn bind(&self, qp: QueuedPod, node: &str) {
        let pod = qp.info.clone();
        match self.binder.bind(&pod, node).await {
            Ok(()) => {
                self.cache
                    .lock()
                    .expect("cache lock")
                    .finish_binding(&pod.key, Instant::now());
                self.queue.done(&pod.key);
                debug!(pod = %pod.key, node, "bound pod");
                self.emit(PodEvent {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                    uid: pod.uid.clone(),
                    type_: "Normal",
                    reason: "Scheduled",
                    message: format!("Successfully assigned {} to {node}", pod.key),
                });
            }
            Err(BindError::NotFound) => {
                self.cache.lock().expect("cache lock").forget_pod(&pod.key);
                self.queue.done(&pod.key);
            }
            Err(e) => {
                self.cache.lock().expect("cache lock").forget_pod(&pod.key);
                warn!(pod = %pod.key, node, error = %e, "binding failed; retrying after backoff");
                self.metrics
                    .attempt(AttemptResult::Error, std::time::Duration::ZERO);
                self.emit(PodEvent {
                    namespace: pod.namespace.clone(),
                    pod: pod.name.clone(),
                    uid: pod.uid.clone(),
                    type_: "Warning",
                    reason: "FailedScheduling",
                    message: format!("Binding rejected: {e}"),
                });
                self.queue.add_backoff(qp);
            }
        }
    }

    /// Record the failure, start preemption if a plan exists, and park the pod.
    fn fail(
        self: &Arc<Self>,
        mut qp: QueuedPod,
        cycle: u64,
        fit: FitError,
        plan: Option<Plan>,
    ) -> String {
        let pod = qp.info.clone();
        let msg = fit.message();
        let mut plugins = fit.plugins();
        info!(pod = %pod.key, reason = %msg, "unable to schedule pod");
        if let Some(plan) = plan {
            plugins.push("Preemption");
            let mut nominated: PodInfo = (*pod).clone();
            nominated.nominated_node_name = Some(plan.node.clone());
            qp.info = Arc::new(nominated);
            let this = self.clone();
            let preemptor = pod.clone();
            tokio::spawn(async move { this.preempt(&preemptor, plan).await });
        }
        let this = self.clone();
        let (p, m) = (pod.clone(), msg.clone());
        tokio::spawn(async move {
            match this.binder.mark_unschedulable(&p, &m).await {
                Ok(()) | Err(BindError::NotFound) => {}
                Err(e) => debug!(pod = %p.key, error = %e, "PodScheduled condition not updated"),
            }
        });
        self.emit(PodEvent {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            uid: pod.uid.clone(),
            type_: "Warning",
            reason: "FailedScheduling",
            message: msg.clone(),
        });
        self.queue.add_unschedulable(qp, cycle, plugins);
        msg
    }

    async fn preempt(&self, pod: &PodInfo, plan: Plan) {
        info!(pod = %pod.key, node = %plan.node, victims = plan.victims.len(), pdb_violations = plan.pdb_violations, "preempting");
        for v in &plan.victims {
            if let Err(e) = self.binder.preempt(v, pod, &plan.node).await {
                warn!(victim = %v.key, error = %e, "preemption victim not deleted");
            }
        }
        if let Err(e) = self.binder.nominate(pod, &plan.node).await {
            debug!(pod = %pod.key, error = %e, "nominatedNodeName not set");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binder::{Call, RecordingBinder};
    use crate::plugins::{default_framework, testing::*};
    use serde_json::json;

    fn sched() -> Arc<Scheduler<RecordingBinder>> {
        Arc::new(Scheduler::new(
            "default-scheduler",
            default_framework(),
            RecordingBinder::default(),
            4,
        ))
    }

    async fn cycle(s: &Arc<Scheduler<RecordingBinder>>) -> Outcome {
        let (qp, c) = s.queue.pop(&CancellationToken::new()).await.unwrap();
        let out = s.schedule_one(qp, c, &mut Rotor::default()).await;
        let _ = s.binds.acquire_many(4).await.unwrap();
        out
    }

    fn cpu_pod(name: &str, cpu: &str) -> Arc<PodInfo> {
        Arc::new(pod(
            json!({"metadata": {"name": name, "uid": name}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}}),
        ))
    }

    #[tokio::test]
    async fn assumed_pods_prevent_overcommit_before_bindings_are_observed() {
        let s = sched();
        s.cache.lock().unwrap().add_or_update_node(&serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "1", "pods": "10"}}})).unwrap());
        s.queue.add(cpu_pod("a", "600m"));
        s.queue.add(cpu_pod("b", "600m"));
        assert!(matches!(cycle(&s).await, Outcome::Scheduled(n) if n == "n"));
        match cycle(&s).await {
            Outcome::Unschedulable(m) => assert_eq!(m, "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."),
            other => panic!("{other:?}"),
        }
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        let calls = s.binder.calls();
        assert!(calls.contains(&Call::Bind {
            pod: "d/a".into(),
            node: "n".into()
        }));
        assert!(calls
            .iter()
            .any(|c| matches!(c, Call::Unschedulable { pod, .. } if pod == "d/b")));
    }

    #[tokio::test]
    async fn failed_bindings_are_forgotten_and_retried() {
        let s = sched();
        s.cache.lock().unwrap().add_or_update_node(&serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "1", "pods": "10"}}})).unwrap());
        s.binder.fail_binds.lock().unwrap().push("d/a".into());
        s.queue.add(cpu_pod("a", "600m"));
        assert!(matches!(cycle(&s).await, Outcome::Scheduled(_)));
        assert_eq!(
            s.cache
                .lock()
                .unwrap()
                .node("n")
                .unwrap()
                .requested
                .milli_cpu,
            0,
            "failed binding forgotten"
        );
        assert_eq!(s.queue.sizes().backoff, 1);
    }

    #[tokio::test]
    async fn preemption_evicts_and_nominates() {
        let s = sched();
        {
            let mut c = s.cache.lock().unwrap();
            c.add_or_update_node(&serde_json::from_value(json!({"metadata": {"name": "n"}, "status": {"allocatable": {"cpu": "1", "pods": "10"}}})).unwrap());
            c.add_or_update_pod(pod(json!({"metadata": {"name": "low"}, "spec": {"nodeName": "n", "priority": 1, "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}})));
        }
        s.queue.add(Arc::new(pod(json!({"metadata": {"name": "high"}, "spec": {"priority": 100, "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}}}]}}))));
        match cycle(&s).await {
            Outcome::Unschedulable(m) => {
                assert_eq!(m, "0/1 nodes are available: 1 Insufficient cpu.")
            }
            other => panic!("{other:?}"),
        }
        for _ in 0..100 {
            if s.binder
                .calls()
                .iter()
                .any(|c| matches!(c, Call::Nominate { .. }))
            {
                break;
            }
            tokio::task::yield_now().await;
        }
        let calls = s.binder.calls();
        assert!(
            calls.contains(&Call::Preempt {
                victim: "d/low".into(),
                node: "n".into()
            }),
            "{calls:?}"
        );
        assert!(
            calls.contains(&Call::Nominate {
                pod: "d/high".into(),
                node: "n".into()
            }),
            "{calls:?}"
        );
    }
}
