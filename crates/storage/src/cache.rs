//! A watch cache in front of etcd that serves LISTs from memory, as kube-apiserver's cacher
//! does with consistent reads from cache (KEP-2340).
//!
//! [`CachedStore`] keeps every key of its [`EtcdStore`] in memory: it loads them once (a
//! paginated range at one revision), then applies the changes of one etcd watch over the whole
//! keyspace ([`EtcdStore::watch_keyspace`]). Writes, GETs and watches go to etcd unchanged; a
//! LIST at the latest revision is served from memory once the cache has seen every change up
//! to etcd's current revision:
//!
//! 1. read etcd's current revision `R` (a count-only range of one key: cheap for etcd);
//! 2. wait until the cache has applied every change up to `R`. Every etcd revision is one
//!    write and the cache's watch sees every write (changes outside the store's prefix only
//!    advance the cache's revision), so this wait ends as soon as the watch has delivered the
//!    writes acknowledged before step 1, without etcd's progress notifications;
//! 3. answer from memory at the cache's revision (≥ `R`): the list holds every write
//!    acknowledged before the request, as a read from etcd would.
//!
//! A LIST at an exact revision (a continue token, `resourceVersionMatch=Exact`) is served from
//! memory only when the cache is at exactly that revision, else by etcd. While the cache is
//! loading or reloading (its watch failed: etcd unreachable, history compacted under it) and
//! when the wait times out, LISTs go to etcd, so the cache never changes an answer, only its
//! cost.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::etcd::{Changes, EtcdStore};
use crate::{Entry, EventType, KeyValue, ListOptions, ListResult, Result, Storage, WatchEvent};

/// How long a LIST waits for the cache to catch up with etcd before reading etcd instead
/// (upstream waits up to 3 s for its watch cache, then fails with 504 or falls back).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(3);

/// Keys per range request while loading the cache, so a large store is never one response.
const LOAD_PAGE: usize = 10_000;

/// Pause before reloading after the cache's watch failed.
const RELOAD_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct State {
    /// False while loading or reloading: the contents are not a revision of the store.
    ready: bool,
    /// Every change up to this revision is applied, and none after it.
    revision: i64,
    items: BTreeMap<String, Entry>,
}

/// The in-memory state of the store at one revision, fed by [`WatchCache::reset`] and
/// [`WatchCache::apply`]. Pure bookkeeping, no I/O.
#[derive(Debug)]
pub struct WatchCache {
    state: RwLock<State>,
    /// The applied revision while ready, 0 while not: what waiting readers watch.
    revision: watch::Sender<i64>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl Default for WatchCache {
    fn default() -> Self {
        Self {
            state: RwLock::default(),
            revision: watch::Sender::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }
}

impl WatchCache {
    /// Replaces the contents with `items`, the whole store as read at `revision`.
    pub fn reset(&self, items: Vec<KeyValue>, revision: i64) {
        let items = items
            .into_iter()
            .map(|kv| {
                let entry = Entry {
                    value: kv.value,
                    create_revision: kv.create_revision,
                    mod_revision: kv.mod_revision,
                };
                (kv.key, entry)
            })
            .collect();
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = State {
            ready: true,
            revision,
            items,
        };
        self.revision.send_replace(revision);
    }

    /// Applies the changes of one watch response (all events up to `changes.revision`).
    pub fn apply(&self, changes: Changes) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        if !state.ready || changes.revision <= state.revision {
            return;
        }
        for event in changes.events {
            apply_event(&mut state.items, event);
        }
        state.revision = changes.revision;
        drop(state);
        self.revision.send_replace(changes.revision);
    }

    /// Marks the contents stale (the watch feeding them failed) until the next [`reset`].
    ///
    /// [`reset`]: WatchCache::reset
    pub fn invalidate(&self) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.ready = false;
        state.items = BTreeMap::new();
        drop(state);
        self.revision.send_replace(0);
    }

    /// The applied revision, or None while the cache is not ready.
    pub fn revision(&self) -> Option<i64> {
        Some(*self.revision.borrow()).filter(|r| *r > 0)
    }

    /// Waits until the cache has applied every change up to `revision`; false when it is not
    /// ready or does not get there within `timeout`.
    pub async fn wait_for(&self, revision: i64, timeout: Duration) -> bool {
        let mut rx = self.revision.subscribe();
        if *rx.borrow_and_update() == 0 {
            return false;
        }
        let caught_up = async {
            match rx.wait_for(|r| *r == 0 || *r >= revision).await {
                Ok(r) => *r > 0,
                Err(_) => false,
            }
        };
        tokio::time::timeout(timeout, caught_up)
            .await
            .unwrap_or(false)
    }

    /// A list answered from memory: at the applied revision when `opts.revision` is 0, or at
    /// exactly `opts.revision` when that is the applied revision. None when the cache cannot
    /// answer (not ready, at another revision, or older than `at_least`).
    pub fn list(&self, prefix: &str, opts: &ListOptions, at_least: i64) -> Option<ListResult> {
        let res = self.snapshot(prefix, opts, at_least);
        let counter = if res.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        res
    }

    /// [`WatchCache::list`] without counting a hit or a miss.
    fn snapshot(&self, prefix: &str, opts: &ListOptions, at_least: i64) -> Option<ListResult> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let servable = state.ready
            && state.revision >= at_least
            && (opts.revision == 0 || opts.revision == state.revision);
        if !servable {
            return None;
        }
        let mut range = state
            .items
            .range::<str, _>((opts.start(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix));
        let items: Vec<KeyValue> = range
            .by_ref()
            .take(opts.max_items())
            .map(|(key, e)| e.to_key_value(key))
            .collect();
        let remaining = range.count();
        Some(ListResult {
            items,
            revision: state.revision,
            remaining,
        })
    }

    /// The cached copy of `key` (None while not ready or when absent).
    pub fn get(&self, key: &str) -> Option<KeyValue> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        if !state.ready {
            return None;
        }
        state.items.get(key).map(|e| e.to_key_value(key))
    }

    /// LISTs answered from memory so far.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// LISTs the cache could not answer (they went to etcd).
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn apply_event(items: &mut BTreeMap<String, Entry>, event: WatchEvent) {
    match event.event_type {
        EventType::Deleted => {
            items.remove(&event.key);
        }
        EventType::Added | EventType::Modified => {
            let create_revision = match (event.event_type, items.get(&event.key)) {
                (EventType::Modified, Some(old)) => old.create_revision,
                _ => event.revision,
            };
            items.insert(
                event.key,
                Entry {
                    value: event.value,
                    create_revision,
                    mod_revision: event.revision,
                },
            );
        }
    }
}

/// An [`EtcdStore`] whose LISTs are served by a [`WatchCache`] (see the module docs).
#[derive(Clone)]
pub struct CachedStore {
    inner: EtcdStore,
    cache: Arc<WatchCache>,
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("inner", &self.inner)
            .field("revision", &self.cache.revision())
            .finish_non_exhaustive()
    }
}

impl CachedStore {
    /// Starts filling the cache in the background (until `token` is cancelled) and returns
    /// at once: until the cache is loaded, LISTs go to etcd.
    pub fn start(inner: EtcdStore, token: CancellationToken) -> Self {
        let cache = Arc::new(WatchCache::default());
        tokio::spawn(reflect(inner.clone(), cache.clone(), token));
        Self { inner, cache }
    }

    pub fn cache(&self) -> &WatchCache {
        &self.cache
    }

    /// Waits until the cache is loaded (for tests and benchmarks); false on timeout.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let mut rx = self.cache.revision.subscribe();
        let loaded = async { rx.wait_for(|r| *r > 0).await.is_ok() };
        tokio::time::timeout(timeout, loaded).await.unwrap_or(false)
    }
}

/// Loads the cache and keeps it current until `token` is cancelled; reloads after failures.
async fn reflect(store: EtcdStore, cache: Arc<WatchCache>, token: CancellationToken) {
    loop {
        let error = tokio::select! {
            _ = token.cancelled() => break,
            e = load_and_follow(&store, &cache) => e,
        };
        cache.invalidate();
        warn!(error = %error, "watch cache stopped; LISTs go to etcd until it is reloaded");
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(RELOAD_BACKOFF) => {}
        }
    }
    cache.invalidate();
}

/// One life of the cache: load every key at one revision, then apply the watch's changes
/// until it fails. Returns the failure.
async fn load_and_follow(store: &EtcdStore, cache: &WatchCache) -> crate::Error {
    let started = Instant::now();
    let mut items = Vec::new();
    let mut revision = 0;
    loop {
        let opts = ListOptions {
            start_after: items.last().map(|kv: &KeyValue| kv.key.clone()),
            limit: LOAD_PAGE,
            revision,
        };
        match store.list("", &opts).await {
            Ok(page) => {
                revision = page.revision;
                let done = page.remaining == 0;
                items.extend(page.items);
                if done {
                    break;
                }
            }
            Err(e) => return e,
        }
    }
    // Watch first, then publish: changes after `revision` are applied on top of the load.
    let mut changes = match store.watch_keyspace(revision).await {
        Ok(changes) => changes,
        Err(e) => return e,
    };
    let count = items.len();
    cache.reset(items, revision);
    info!(
        keys = count,
        revision,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "watch cache loaded"
    );
    loop {
        match changes.next().await {
            Some(Ok(c)) => cache.apply(c),
            Some(Err(e)) => return e,
            None => return crate::Error::Unavailable("the watch cache's etcd watch ended".into()),
        }
    }
}

#[async_trait]
impl Storage for CachedStore {
    async fn create(&self, key: &str, value: Bytes) -> Result<i64> {
        self.inner.create(key, value).await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.inner.get(key).await
    }

    fn cached(&self, key: &str) -> Option<KeyValue> {
        self.cache.get(key)
    }

    async fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
        if opts.revision != 0 {
            if let Some(res) = self.cache.list(prefix, opts, 0) {
                return Ok(res);
            }
            return self.inner.list(prefix, opts).await;
        }
        if self.cache.revision().is_none() {
            self.cache.misses.fetch_add(1, Ordering::Relaxed);
            return self.inner.list(prefix, opts).await;
        }
        // etcd's revision now, and meanwhile a snapshot at the applied revision: when that
        // already covers etcd's (the cache is caught up, the usual case) it is the answer, and
        // the round trip overlapped taking it.
        let current = self.inner.current_revision();
        tokio::pin!(current);
        let sent = futures::poll!(current.as_mut());
        let early = self.cache.snapshot(prefix, opts, 0);
        let current = match sent {
            std::task::Poll::Ready(r) => r?,
            std::task::Poll::Pending => current.await?,
        };
        if let Some(res) = early.filter(|res| res.revision >= current) {
            self.cache.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(res);
        }
        if self.cache.wait_for(current, CATCH_UP_TIMEOUT).await {
            if let Some(res) = self.cache.list(prefix, opts, current) {
                return Ok(res);
            }
        } else {
            self.cache.misses.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.list(prefix, opts).await
    }

    async fn update(&self, key: &str, value: Bytes, expected_revision: i64) -> Result<i64> {
        self.inner.update(key, value, expected_revision).await
    }

    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<(KeyValue, i64)> {
        self.inner.delete(key, expected_revision).await
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> Result<BoxStream<'static, Result<WatchEvent>>> {
        self.inner.watch(prefix, from_revision).await
    }

    async fn current_revision(&self) -> Result<i64> {
        self.inner.current_revision().await
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.inner.compact(revision).await
    }

    async fn count(&self, prefix: &str) -> Result<usize> {
        self.inner.count(prefix).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, rev: i64) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Bytes::from(format!("v{rev}")),
            create_revision: rev,
            mod_revision: rev,
        }
    }

    fn event(event_type: EventType, key: &str, rev: i64) -> WatchEvent {
        WatchEvent {
            event_type,
            key: key.into(),
            value: Bytes::from(format!("v{rev}")),
            prev_value: None,
            revision: rev,
        }
    }

    fn keys(res: &ListResult) -> Vec<&str> {
        res.items.iter().map(|kv| kv.key.as_str()).collect()
    }

    fn loaded() -> WatchCache {
        let cache = WatchCache::default();
        cache.reset(
            vec![
                kv("/registry/pods/a/p1", 2),
                kv("/registry/pods/a/p2", 3),
                kv("/registry/pods/b/p1", 4),
                kv("/registry/services/a/s", 5),
            ],
            7,
        );
        cache
    }

    #[test]
    fn lists_keys_under_a_prefix_with_limit_start_after_and_remaining() {
        let cache = loaded();
        let all = cache
            .list("/registry/pods/", &ListOptions::default(), 0)
            .unwrap();
        assert_eq!(
            keys(&all),
            [
                "/registry/pods/a/p1",
                "/registry/pods/a/p2",
                "/registry/pods/b/p1"
            ]
        );
        assert_eq!((all.revision, all.remaining), (7, 0));
        let page = ListOptions {
            limit: 1,
            start_after: Some("/registry/pods/a/p1".into()),
            revision: 0,
        };
        let res = cache.list("/registry/pods/", &page, 0).unwrap();
        assert_eq!(
            (keys(&res), res.remaining),
            (vec!["/registry/pods/a/p2"], 1)
        );
        // A continue point before the prefix starts at the prefix.
        let before = ListOptions {
            start_after: Some("/registry/a".into()),
            ..Default::default()
        };
        assert_eq!(
            cache
                .list("/registry/pods/b/", &before, 0)
                .unwrap()
                .items
                .len(),
            1
        );
    }

    #[test]
    fn applies_changes_and_keeps_create_revisions() {
        let cache = loaded();
        cache.apply(Changes {
            events: vec![
                event(EventType::Modified, "/registry/pods/a/p1", 8),
                event(EventType::Deleted, "/registry/pods/a/p2", 9),
                event(EventType::Added, "/registry/pods/c/p9", 10),
            ],
            revision: 10,
        });
        // A response with only changes outside the store advances the revision.
        cache.apply(Changes {
            events: vec![],
            revision: 12,
        });
        let res = cache
            .list("/registry/pods/", &ListOptions::default(), 12)
            .unwrap();
        assert_eq!(
            keys(&res),
            [
                "/registry/pods/a/p1",
                "/registry/pods/b/p1",
                "/registry/pods/c/p9"
            ]
        );
        assert_eq!(
            (res.items[0].create_revision, res.items[0].mod_revision),
            (2, 8)
        );
        assert_eq!(res.items[0].value, Bytes::from("v8"));
        assert_eq!(res.revision, 12);
        // Replayed (older) changes are ignored.
        cache.apply(Changes {
            events: vec![event(EventType::Deleted, "/registry/pods/b/p1", 11)],
            revision: 11,
        });
        assert_eq!(cache.len(), 4);
    }

    #[test]
    fn answers_exact_revisions_only_at_its_own_revision() {
        let cache = loaded();
        let at = |revision| ListOptions {
            revision,
            ..Default::default()
        };
        assert!(cache.list("/registry/pods/", &at(7), 0).is_some());
        assert!(cache.list("/registry/pods/", &at(6), 0).is_none());
        assert!(cache.list("/registry/pods/", &at(8), 0).is_none());
        // Behind what the reader must see: no answer.
        assert!(cache
            .list("/registry/pods/", &ListOptions::default(), 8)
            .is_none());
        assert_eq!((cache.hits(), cache.misses()), (1, 3));
    }

    #[test]
    fn an_invalidated_cache_answers_nothing_until_reset() {
        let cache = loaded();
        cache.invalidate();
        assert_eq!(cache.revision(), None);
        assert!(cache
            .list("/registry/", &ListOptions::default(), 0)
            .is_none());
        cache.apply(Changes {
            events: vec![event(EventType::Added, "/registry/x", 20)],
            revision: 20,
        });
        assert!(cache.is_empty());
        cache.reset(vec![kv("/registry/y", 21)], 21);
        assert_eq!(cache.revision(), Some(21));
    }

    #[tokio::test]
    async fn waiting_ends_when_the_revision_is_applied_or_the_cache_fails() {
        let cache = Arc::new(loaded());
        assert!(cache.wait_for(7, Duration::from_millis(1)).await);
        assert!(!cache.wait_for(8, Duration::from_millis(20)).await);
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.wait_for(9, Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        cache.apply(Changes {
            events: vec![],
            revision: 9,
        });
        assert!(waiter.await.unwrap());
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.wait_for(50, Duration::from_secs(10)).await })
        };
        tokio::task::yield_now().await;
        cache.invalidate();
        assert!(!waiter.await.unwrap());
        assert!(!cache.wait_for(1, Duration::from_secs(1)).await);
    }
}
