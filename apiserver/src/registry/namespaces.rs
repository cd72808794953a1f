//! The namespace lifecycle cache behind "no new objects in a missing or terminating
//! namespace" (upstream's NamespaceLifecycle admission, which also reads an informer cache).
//! It saves a storage read on every namespaced create. Writes through this API server update
//! it synchronously; other API servers' writes arrive through a watch. Anything the cache does
//! not know as active is checked against storage, so a stale cache can only cost a read.

use futures::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use storage::{EventType, Storage};
use tokio_util::sync::CancellationToken;

const PREFIX: &str = "/registry/namespaces/";

#[derive(Default)]
pub struct NamespaceCache {
    /// name → terminating
    states: RwLock<HashMap<String, bool>>,
    synced: AtomicBool,
}

/// Whether a stored Namespace is terminating.
pub fn is_terminating(ns: &Value) -> bool {
    ns.pointer("/metadata/deletionTimestamp").is_some()
        || ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating")
}

impl NamespaceCache {
    /// True only when the cache is synced and knows `ns` as active.
    pub fn is_active(&self, ns: &str) -> bool {
        self.synced.load(Ordering::Acquire)
            && self.states.read().expect("namespace cache lock").get(ns) == Some(&false)
    }

    pub fn set(&self, ns: &str, terminating: bool) {
        self.states
            .write()
            .expect("namespace cache lock")
            .insert(ns.to_string(), terminating);
    }

    pub fn remove(&self, ns: &str) {
        self.states
            .write()
            .expect("namespace cache lock")
            .remove(ns);
    }

    fn apply(&self, key: &str, value: Option<&[u8]>) {
        let Some(name) = key.strip_prefix(PREFIX) else {
            return;
        };
        match value.and_then(|v| serde_json::from_slice::<Value>(v).ok()) {
            Some(ns) => self.set(name, is_terminating(&ns)),
            None => self.remove(name),
        }
    }

    /// Keep the cache in step with storage until `shutdown`: list, then watch from the list's
    /// revision; on any error mark it unsynced (callers fall back to storage) and start over.
    pub fn spawn(self: &Arc<Self>, store: Arc<dyn Storage>, shutdown: CancellationToken) {
        let cache = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = cache.sync_once(store.as_ref(), &shutdown).await {
                    tracing::debug!(error = %e, "namespace cache resyncing");
                }
                cache.synced.store(false, Ordering::Release);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
        });
    }

    async fn sync_once(
        &self,
        store: &dyn Storage,
        shutdown: &CancellationToken,
    ) -> Result<(), storage::Error> {
        let list = store.list(PREFIX, &Default::default()).await?;
        {
            let mut states = self.states.write().expect("namespace cache lock");
            states.clear();
            for kv in &list.items {
                if let (Some(name), Ok(ns)) = (
                    kv.key.strip_prefix(PREFIX),
                    serde_json::from_slice::<Value>(&kv.value),
                ) {
                    states.insert(name.to_string(), is_terminating(&ns));
                }
            }
        }
        let mut events = store.watch(PREFIX, list.revision).await?;
        self.synced.store(true, Ordering::Release);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                ev = events.next() => match ev {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(ev)) => match ev.event_type {
                        EventType::Deleted => self.apply(&ev.key, None),
                        _ => self.apply(&ev.key, Some(&ev.value)),
                    },
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_synced_active_namespaces_skip_the_storage_check() {
        let c = NamespaceCache::default();
        c.set("a", false);
        assert!(!c.is_active("a"), "unsynced cache must not be trusted");
        c.synced.store(true, Ordering::Release);
        assert!(c.is_active("a"));
        c.set("a", true);
        assert!(!c.is_active("a"));
        c.apply(
            "/registry/namespaces/b",
            Some(
                &serde_json::to_vec(&json!({"metadata":{"name":"b"},"status":{"phase":"Active"}}))
                    .unwrap(),
            ),
        );
        assert!(c.is_active("b"));
        c.apply("/registry/namespaces/b", None);
        assert!(!c.is_active("b"));
        assert!(is_terminating(
            &json!({"metadata":{"deletionTimestamp":"x"}})
        ));
    }
}
