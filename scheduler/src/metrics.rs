//! Prometheus metrics with upstream's names: `scheduler_schedule_attempts_total{result,profile}`,
//! `scheduler_scheduling_attempt_duration_seconds{result,profile}` and
//! `scheduler_pending_pods{queue}`.

use crate::queue::Sizes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

type Labels = Vec<(String, String)>;

/// The scheduler's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    attempts: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
    pending: Family<Labels, Gauge>,
    profile: String,
}

fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// Outcome of one scheduling attempt.
#[derive(Clone, Copy, Debug)]
pub enum AttemptResult {
    Scheduled,
    Unschedulable,
    Error,
}

impl AttemptResult {
    fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Scheduled => "scheduled",
            AttemptResult::Unschedulable => "unschedulable",
            AttemptResult::Error => "error",
        }
    }
}

impl Metrics {
    pub fn new(profile: &str) -> Self {
        let mut registry = Registry::with_prefix("scheduler");
        let attempts = Family::<Labels, Counter>::default();
        let duration = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(
            histogram as fn() -> Histogram,
        );
        let pending = Family::<Labels, Gauge>::default();
        registry.register(
            "schedule_attempts",
            "Number of attempts to schedule pods, by the result.",
            attempts.clone(),
        );
        registry.register(
            "scheduling_attempt_duration_seconds",
            "Scheduling attempt latency in seconds (scheduling algorithm + binding).",
            duration.clone(),
        );
        registry.register(
            "pending_pods",
            "Number of pending pods, by the queue type.",
            pending.clone(),
        );
        Metrics {
            registry,
            attempts,
            duration,
            pending,
            profile: profile.to_string(),
        }
    }

    pub fn attempt(&self, result: AttemptResult, took: Duration) {
        let labels = vec![
            ("result".to_string(), result.as_str().to_string()),
            ("profile".to_string(), self.profile.clone()),
        ];
        self.attempts.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn set_queue_sizes(&self, s: Sizes) {
        for (q, n) in [
            ("active", s.active),
            ("backoff", s.backoff),
            ("unschedulable", s.unschedulable),
            ("gated", s.gated),
        ] {
            self.pending
                .get_or_create(&vec![("queue".to_string(), q.to_string())])
                .set(n as i64);
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_attempts_latency_and_queue_sizes() {
        let m = Metrics::new("default-scheduler");
        m.attempt(AttemptResult::Scheduled, Duration::from_millis(2));
        m.attempt(AttemptResult::Unschedulable, Duration::from_millis(1));
        m.set_queue_sizes(Sizes {
            active: 3,
            backoff: 1,
            unschedulable: 2,
            gated: 0,
        });
        let text = m.encode();
        assert!(text.contains("scheduler_schedule_attempts_total{result=\"scheduled\",profile=\"default-scheduler\"} 1"), "{text}");
        assert!(text.contains("scheduler_scheduling_attempt_duration_seconds_count{result=\"unschedulable\",profile=\"default-scheduler\"} 1"), "{text}");
        assert!(
            text.contains("scheduler_pending_pods{queue=\"unschedulable\"} 2"),
            "{text}"
        );
    }
}
