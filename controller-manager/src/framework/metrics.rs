//! Prometheus metrics of the controller-manager, named as upstream's workqueue and controller
//! metrics: per-controller queue depth and adds, reconcile latency and errors, plus leadership.

use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = [(&'static str, String); 1];

fn new_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric the process exports. One instance per process, shared by all controllers.
pub struct Metrics {
    registry: Mutex<Registry>,
    depth: Family<Labels, Gauge>,
    adds: Family<Labels, Counter>,
    reconcile_duration: Family<Labels, Histogram, fn() -> Histogram>,
    reconcile_errors: Family<Labels, Counter>,
    reconciles: Family<Labels, Counter>,
    /// 1 while this instance holds the leader lease.
    pub leader: Gauge,
}

/// The queue metrics of one controller.
#[derive(Clone)]
pub struct QueueMetrics {
    pub depth: Gauge,
    pub adds: Counter,
}

/// The reconcile metrics of one controller.
#[derive(Clone)]
pub struct ReconcileMetrics {
    pub duration: Histogram,
    pub errors: Counter,
    pub total: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let depth = Family::<Labels, Gauge>::default();
        let adds = Family::<Labels, Counter>::default();
        let reconcile_duration =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
                new_histogram as fn() -> Histogram,
            );
        let reconcile_errors = Family::<Labels, Counter>::default();
        let reconciles = Family::<Labels, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "workqueue_depth",
            "Current depth of the work queue",
            depth.clone(),
        );
        registry.register(
            "workqueue_adds",
            "Items added to the work queue",
            adds.clone(),
        );
        registry.register(
            "controller_reconcile_duration_seconds",
            "Time taken by one reconcile",
            reconcile_duration.clone(),
        );
        registry.register(
            "controller_reconcile_errors",
            "Reconciles that returned an error",
            reconcile_errors.clone(),
        );
        registry.register("controller_reconcile", "Reconciles run", reconciles.clone());
        registry.register(
            "leader_election_master_status",
            "1 while this instance is the leader",
            leader.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            depth,
            adds,
            reconcile_duration,
            reconcile_errors,
            reconciles,
            leader,
        }
    }

    pub fn queue(&self, name: &str) -> QueueMetrics {
        let l = [("name", name.to_string())];
        QueueMetrics {
            depth: self.depth.get_or_create(&l).clone(),
            adds: self.adds.get_or_create(&l).clone(),
        }
    }

    pub fn reconcile(&self, controller: &str) -> ReconcileMetrics {
        let l = [("controller", controller.to_string())];
        ReconcileMetrics {
            duration: self.reconcile_duration.get_or_create(&l).clone(),
            errors: self.reconcile_errors.get_or_create(&l).clone(),
            total: self.reconciles.get_or_create(&l).clone(),
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_queue_and_reconcile_series_per_controller() {
        let m = Metrics::new();
        m.queue("replicaset").depth.set(3);
        let r = m.reconcile("replicaset");
        r.errors.inc();
        r.duration.observe(0.01);
        let text = m.render();
        assert!(
            text.contains("workqueue_depth{name=\"replicaset\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("controller_reconcile_errors_total{controller=\"replicaset\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "controller_reconcile_duration_seconds_count{controller=\"replicaset\"} 1"
            ),
            "{text}"
        );
    }
}
