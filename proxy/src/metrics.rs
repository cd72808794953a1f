//! Prometheus metrics with upstream kube-proxy's names: sync duration histogram, last sync
//! timestamp, iptables-restore failures, rule counts per table.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type Labels = Vec<(String, String)>;

/// The proxy's metrics and their registry.
pub struct Metrics {
    registry: Registry,
    pub sync_duration: Histogram,
    pub last_sync_timestamp: Gauge<f64, AtomicU64>,
    pub restore_failures: Counter,
    pub rules: Family<Labels, Gauge>,
    pub service_ports: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kubeproxy");
        let sync_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let last_sync_timestamp = Gauge::<f64, AtomicU64>::default();
        let restore_failures = Counter::default();
        let rules = Family::<Labels, Gauge>::default();
        let service_ports = Gauge::default();
        registry.register(
            "sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            sync_duration.clone(),
        );
        registry.register(
            "sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            last_sync_timestamp.clone(),
        );
        registry.register(
            "sync_proxy_rules_iptables_restore_failures",
            "Cumulative proxy iptables restore failures",
            restore_failures.clone(),
        );
        registry.register(
            "sync_proxy_rules_iptables_total",
            "Total number of iptables rules owned by kube-proxy",
            rules.clone(),
        );
        registry.register(
            "sync_proxy_rules_service_ports",
            "Number of service ports programmed at the last sync",
            service_ports.clone(),
        );
        Self {
            registry,
            sync_duration,
            last_sync_timestamp,
            restore_failures,
            rules,
            service_ports,
        }
    }

    /// Set the rule count of `table`.
    pub fn set_rules(&self, table: &str, n: usize) {
        self.rules
            .get_or_create(&vec![("table".to_string(), table.to_string())])
            .set(n as i64);
    }

    /// The text exposition.
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
    fn names_match_upstream() {
        let m = Metrics::new();
        m.restore_failures.inc();
        m.set_rules("nat", 12);
        let text = m.encode();
        for name in [
            "kubeproxy_sync_proxy_rules_iptables_restore_failures_total 1",
            "kubeproxy_sync_proxy_rules_duration_seconds_count 0",
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "kubeproxy_sync_proxy_rules_iptables_total{table=\"nat\"} 12",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
