//! Pod lifecycle event generator: relists the runtime every period (containerd 1.6 does not
//! implement `GetContainerEvents`) and reports the pods whose sandboxes or containers changed,
//! so their workers sync at once instead of at the next periodic resync.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::cri::{labels, CriResult, Runtime};

/// A fingerprint per pod uid of its sandboxes' and containers' ids and states.
pub async fn snapshot(rt: &dyn Runtime) -> CriResult<HashMap<String, u64>> {
    let sandboxes = rt.list_pod_sandbox(None).await?;
    let containers = rt.list_containers(None).await?;
    let mut items: HashMap<String, Vec<(String, i32)>> = HashMap::new();
    for s in sandboxes {
        if let Some(uid) = s.labels.get(labels::POD_UID) {
            items.entry(uid.clone()).or_default().push((s.id, s.state));
        }
    }
    for c in containers {
        if let Some(uid) = c.labels.get(labels::POD_UID) {
            items
                .entry(uid.clone())
                .or_default()
                .push((c.id, 10 + c.state));
        }
    }
    Ok(items
        .into_iter()
        .map(|(uid, mut v)| {
            v.sort();
            let mut h = DefaultHasher::new();
            v.hash(&mut h);
            (uid, h.finish())
        })
        .collect())
}

/// The uids whose fingerprint differs between two snapshots (added, removed or changed).
pub fn changed(prev: &HashMap<String, u64>, next: &HashMap<String, u64>) -> Vec<String> {
    let mut out: Vec<String> = next
        .iter()
        .filter(|(k, v)| prev.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .chain(prev.keys().filter(|k| !next.contains_key(*k)).cloned())
        .collect();
    out.sort();
    out
}

/// Relist until shutdown, calling `notify(uid)` for every changed pod. `healthy` records the
/// time of the last successful relist (the kubelet's `/healthz` checks it, as upstream's
/// PLEG health check).
pub async fn run(
    rt: Arc<dyn Runtime>,
    period: Duration,
    notify: impl Fn(&str) + Send + 'static,
    last_ok: Arc<std::sync::Mutex<Instant>>,
    shutdown: CancellationToken,
) {
    let mut prev: HashMap<String, u64> = HashMap::new();
    let mut first = true;
    loop {
        match snapshot(&*rt).await {
            Ok(next) => {
                if !first {
                    for uid in changed(&prev, &next) {
                        notify(&uid);
                    }
                }
                first = false;
                prev = next;
                *last_ok.lock().unwrap() = Instant::now();
            }
            Err(e) => tracing::warn!(error = %e, "runtime relist failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::FakeRuntime;
    use crate::cri::v1;

    #[tokio::test]
    async fn changes_are_reported_per_pod() {
        let rt = FakeRuntime::new();
        let empty = snapshot(&rt).await.unwrap();
        let cfg = v1::PodSandboxConfig {
            metadata: Some(v1::PodSandboxMetadata {
                name: "p".into(),
                ..Default::default()
            }),
            labels: [(labels::POD_UID.to_string(), "u1".to_string())].into(),
            ..Default::default()
        };
        let id = rt.run_pod_sandbox(cfg, String::new()).await.unwrap();
        let one = snapshot(&rt).await.unwrap();
        assert_eq!(changed(&empty, &one), vec!["u1"]);
        assert!(changed(&one, &one).is_empty());
        rt.stop_pod_sandbox(id).await.unwrap();
        let stopped = snapshot(&rt).await.unwrap();
        assert_eq!(changed(&one, &stopped), vec!["u1"]);
        assert_eq!(changed(&stopped, &empty), vec!["u1"]);
    }
}
