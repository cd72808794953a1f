//! The etcd v3 backend, laid out as upstream's etcd3 store lays out its data.
//!
//! Keys given to [`Storage`] are stored verbatim (`/registry/pods/ns/name`), optionally behind
//! an extra key prefix that isolates several stores sharing one etcd (tests, benchmarks); the
//! prefix never appears in keys handed back. Every conditional write is one etcd transaction,
//! so preconditions are checked atomically by etcd itself; `resourceVersion` is etcd's
//! `mod_revision`.
//!
//! Watches are started at an explicit revision (the current one for "from now"), so a watch
//! returned by [`Storage::watch`] never misses a write acknowledged after the call returned and
//! never reports one acknowledged before it. A watch stream ends after its first error:
//! [`Error::Expired`] when its start was compacted, [`Error::Unavailable`] when the connection
//! to etcd is lost.
//!
//! History is bounded by [`EtcdStore::spawn_compactor`], which, like kube-apiserver, compacts
//! every interval to the revision it saw one interval earlier and coordinates through the same
//! `compact_rev_key` so that several API servers compact once per interval between them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType as EtcdEventType,
    GetOptions, KvClient, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchClient, WatchOptions,
    WatchResponse, WatchStream,
};
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{Error, EventType, KeyValue, ListOptions, ListResult, Result, Storage, WatchEvent};

/// How often kube-apiserver compacts etcd by default (`--etcd-compaction-interval`).
pub const DEFAULT_COMPACTION_INTERVAL: Duration = Duration::from_secs(300);

/// Default bound on a single unary etcd request (upstream's `--request-timeout` is 60s).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The key upstream's compactor uses to elect one compaction per interval among API servers.
const COMPACT_REV_KEY: &str = "compact_rev_key";

/// Upstream raises gRPC's 4 MiB receive limit so that large lists still fit in one response.
const MAX_RECV_MESSAGE_SIZE: usize = i32::MAX as usize;

/// A [`Storage`] backed by an etcd v3 cluster. Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    /// Extra prefix prepended to every key (empty in production).
    prefix: Arc<str>,
    request_timeout: Duration,
    /// The highest compaction revision this process has seen, to report in [`Error::Expired`].
    compacted: Arc<AtomicI64>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to etcd (`http://host:port` endpoints) and checks that it answers.
    ///
    /// `prefix` is prepended to every key, e.g. `"/test-42"` so that a test's
    /// `/registry/pods/a` lives at `/test-42/registry/pods/a`; pass `""` in production, where
    /// keys already carry upstream's `/registry` prefix.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(10))
            .with_keep_alive_while_idle(true);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(map_err)?;
        let store = Self {
            kv: client
                .kv_client()
                .max_decoding_message_size(MAX_RECV_MESSAGE_SIZE),
            watch: client
                .watch_client()
                .max_decoding_message_size(MAX_RECV_MESSAGE_SIZE),
            prefix: prefix.into(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            compacted: Arc::new(AtomicI64::new(0)),
        };
        // The client connects lazily; fail here rather than on the first request.
        let probe = store.clone().with_request_timeout(Duration::from_secs(10));
        probe
            .current_revision()
            .await
            .map_err(|e| Error::Unavailable(format!("connecting to etcd at {endpoints:?}: {e}")))?;
        Ok(store)
    }

    /// Bounds every unary request (watches are not bounded); a request that times out fails
    /// with [`Error::Unavailable`], and a write that timed out may still have been applied.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Runs kube-apiserver's compaction loop until `token` is cancelled: every `interval`,
    /// compact to the revision observed at the previous tick, so at least one interval of
    /// history is always kept. With several API servers on one etcd, only one of them compacts
    /// per interval (they agree through a transaction on `compact_rev_key`).
    pub fn spawn_compactor(&self, interval: Duration, token: CancellationToken) -> JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticker =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // (version of compact_rev_key we expect, revision seen at the previous tick)
            let mut state = (0, 0);
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                match store.compact_tick(state.0, state.1).await {
                    Ok(next) => state = next,
                    Err(e) => warn!(error = %e, "etcd compaction tick failed"),
                }
            }
            debug!("etcd compactor stopped");
        })
    }

    /// One compactor tick, upstream's algorithm: whoever moves `compact_rev_key` from the
    /// version everybody last saw compacts to the revision recorded at the previous tick.
    /// Returns the state for the next tick.
    async fn compact_tick(
        &self,
        expected_version: i64,
        previous_revision: i64,
    ) -> Result<(i64, i64)> {
        let key = self.full_key(COMPACT_REV_KEY);
        let txn = Txn::new()
            .when([Compare::version(
                key.clone(),
                CompareOp::Equal,
                expected_version,
            )])
            .and_then([TxnOp::put(key.clone(), previous_revision.to_string(), None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.txn(txn).await?;
        let current_revision = header_revision(&resp)?;
        if !resp.succeeded() {
            // Someone else compacts this interval; follow their version.
            let version = first_get(&resp)
                .and_then(|kvs| kvs.first().map(|kv| kv.version()))
                .unwrap_or(0);
            return Ok((version, current_revision));
        }
        let next = (expected_version + 1, current_revision);
        if previous_revision == 0 {
            // The first tick only records where history starts.
            return Ok(next);
        }
        match self.compact(previous_revision).await {
            Ok(()) => info!(revision = previous_revision, "compacted etcd"),
            Err(e) => warn!(revision = previous_revision, error = %e, "etcd compaction failed"),
        }
        Ok(next)
    }

    /// Every change in the whole etcd keyspace after `from_revision` (0 = from now), one item
    /// per etcd watch response: the changes to this store's keys (prefix stripped, as
    /// [`Storage::watch`] reports them, but without previous values: a deletion's value is
    /// empty) and the highest revision the response covers, which also
    /// counts writes outside this store's prefix (other tenants of a shared etcd, the
    /// compactor's key). Since every etcd revision is one write and every write is seen here,
    /// a cache fed by this stream knows it has seen every change up to a revision read from
    /// etcd as soon as the stream has reported that revision (see [`crate::cache`]).
    pub async fn watch_keyspace(
        &self,
        from_revision: i64,
    ) -> Result<BoxStream<'static, Result<Changes>>> {
        self.open_watch(vec![0], vec![0], from_revision, true).await
    }

    /// Starts an etcd watch on `[key, end)` after `from_revision` and waits until etcd has
    /// registered it, so that setup errors surface now and a dropped stream never leaves a
    /// half-created watcher behind. One item per etcd watch response.
    async fn open_watch(
        &self,
        key: Vec<u8>,
        end: Vec<u8>,
        from_revision: i64,
        whole_keyspace: bool,
    ) -> Result<BoxStream<'static, Result<Changes>>> {
        let start_revision = match from_revision {
            0 => self.current_revision().await? + 1,
            r => r + 1,
        };
        let mut options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(start_revision);
        // A cache only needs the key of a deletion: spare etcd reading every previous value.
        if !whole_keyspace {
            options = options.with_prev_key();
        }
        let mut client = self.watch.clone();
        let stream = self
            .timed(client.watch(key, Some(options)))
            .await
            .map_err(map_err)?;
        let mut state = WatchState {
            store: self.clone(),
            stream,
            requested: start_revision - 1,
            whole_keyspace,
            pending: VecDeque::new(),
            done: false,
        };
        match tokio::time::timeout(self.request_timeout, state.stream.message()).await {
            Ok(Ok(Some(resp))) if resp.created() => state.handle(resp),
            Ok(Ok(Some(resp))) => {
                return Err(Error::Internal(format!(
                    "etcd answered a watch request with {resp:?}"
                )))
            }
            Ok(Ok(None)) => return Err(Error::Unavailable("etcd closed the watch stream".into())),
            Ok(Err(e)) => return Err(map_err(e)),
            Err(_) => {
                return Err(Error::Unavailable(
                    "timed out creating an etcd watch".into(),
                ))
            }
        }
        Ok(futures::stream::unfold(state, |mut state| async move {
            let item = state.next().await?;
            Some((item, state))
        })
        .boxed())
    }

    fn full_key(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + key.len());
        full.extend_from_slice(self.prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    fn user_key(&self, key: &[u8]) -> Result<String> {
        let key = key.strip_prefix(self.prefix.as_bytes()).ok_or_else(|| {
            Error::Internal(format!(
                "etcd returned key {:?} outside prefix {:?}",
                String::from_utf8_lossy(key),
                self.prefix
            ))
        })?;
        String::from_utf8(key.to_vec())
            .map_err(|e| Error::Internal(format!("etcd returned a non-UTF-8 key: {e}")))
    }

    fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue> {
        Ok(KeyValue {
            key: self.user_key(kv.key())?,
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    fn expired(&self, requested: i64) -> Error {
        let oldest = self.compacted.load(Ordering::Relaxed).max(requested + 1);
        Error::Expired { requested, oldest }
    }

    fn saw_compaction(&self, revision: i64) {
        self.compacted.fetch_max(revision, Ordering::Relaxed);
    }

    async fn timed<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, etcd_client::Error> {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(res) => res,
            Err(_) => Err(etcd_client::Error::Internal(TIMED_OUT.to_string())),
        }
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let mut kv = self.kv.clone();
        self.timed(kv.txn(txn)).await.map_err(map_err)
    }

    async fn range(
        &self,
        key: Vec<u8>,
        options: GetOptions,
    ) -> Result<etcd_client::GetResponse, etcd_client::Error> {
        let mut kv = self.kv.clone();
        self.timed(kv.get(key, Some(options))).await
    }

    /// `[start, end)` of the keys under `prefix`, in etcd's terms.
    fn prefix_range(&self, prefix: &str) -> (Vec<u8>, Vec<u8>) {
        let start = self.full_key(prefix);
        let end = prefix_end(&start);
        // etcd rejects an empty key; "\0" is the smallest key there is.
        let start = if start.is_empty() { vec![0] } else { start };
        (start, end)
    }
}

const TIMED_OUT: &str = "etcd request timed out";

/// The smallest key greater than every key starting with `prefix` ("\0" = no upper bound).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn header_revision(resp: &TxnResponse) -> Result<i64> {
    resp.header()
        .map(|h| h.revision())
        .ok_or_else(|| Error::Internal("etcd response without header".into()))
}

/// The key-values of the first operation of a transaction, if it was a get.
fn first_get(resp: &TxnResponse) -> Option<Vec<etcd_client::KeyValue>> {
    match resp.op_responses().into_iter().next()? {
        TxnOpResponse::Get(mut get) => Some(get.take_kvs()),
        _ => None,
    }
}

fn grpc_message(e: &etcd_client::Error) -> Option<&str> {
    match e {
        etcd_client::Error::GRpcStatus(status) => Some(status.message()),
        _ => None,
    }
}

fn is_compacted(e: &etcd_client::Error) -> bool {
    grpc_message(e).is_some_and(|m| m.contains("required revision has been compacted"))
}

fn is_future_revision(e: &etcd_client::Error) -> bool {
    grpc_message(e).is_some_and(|m| m.contains("required revision is a future revision"))
}

/// Transient failures (the apiserver answers 503/504 and clients retry) versus the rest.
fn map_err(e: etcd_client::Error) -> Error {
    use tonic::Code;
    match &e {
        etcd_client::Error::GRpcStatus(status) => match status.code() {
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::Unknown => Error::Unavailable(format!("etcd: {}", status.message())),
            _ if is_future_revision(&e) => {
                Error::Unavailable(format!("etcd: {}", status.message()))
            }
            _ => Error::Internal(format!("etcd: {}", status.message())),
        },
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            Error::Unavailable(e.to_string())
        }
        etcd_client::Error::Internal(m) if m == TIMED_OUT => Error::Unavailable(m.clone()),
        _ => Error::Internal(e.to_string()),
    }
}

#[async_trait]
impl Storage for EtcdStore {
    async fn create(&self, key: &str, value: Bytes) -> Result<i64> {
        let k = self.full_key(key);
        let txn = Txn::new()
            .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k, value.to_vec(), None)]);
        let resp = self.txn(txn).await?;
        if !resp.succeeded() {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        header_revision(&resp)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        let resp = self
            .range(self.full_key(key), GetOptions::new())
            .await
            .map_err(map_err)?;
        resp.kvs().first().map(|kv| self.key_value(kv)).transpose()
    }

    async fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
        let (prefix_start, end) = self.prefix_range(prefix);
        let start = match &opts.start_after {
            Some(after) => {
                let mut next = self.full_key(after);
                next.push(0);
                next.max(prefix_start)
            }
            None => prefix_start,
        };
        let mut options = GetOptions::new()
            .with_range(end)
            .with_revision(opts.revision);
        if opts.limit > 0 {
            options = options.with_limit(i64::try_from(opts.limit).unwrap_or(i64::MAX));
        }
        let mut resp = match self.range(start, options).await {
            Ok(resp) => resp,
            Err(e) if is_compacted(&e) => return Err(self.expired(opts.revision)),
            Err(e) => return Err(map_err(e)),
        };
        let revision = match opts.revision {
            0 => resp
                .header()
                .map(|h| h.revision())
                .ok_or_else(|| Error::Internal("etcd response without header".into()))?,
            r => r,
        };
        let count = usize::try_from(resp.count()).unwrap_or(0);
        let items = resp
            .take_kvs()
            .iter()
            .map(|kv| self.key_value(kv))
            .collect::<Result<Vec<_>>>()?;
        Ok(ListResult {
            remaining: count.saturating_sub(items.len()),
            items,
            revision,
        })
    }

    async fn update(&self, key: &str, value: Bytes, expected_revision: i64) -> Result<i64> {
        let k = self.full_key(key);
        let txn = Txn::new()
            .when([
                // mod_revision of a missing key compares as 0: make sure it exists.
                Compare::version(k.clone(), CompareOp::Greater, 0),
                Compare::mod_revision(k.clone(), CompareOp::Equal, expected_revision),
            ])
            .and_then([TxnOp::put(k.clone(), value.to_vec(), None)])
            .or_else([TxnOp::get(k, None)]);
        let resp = self.txn(txn).await?;
        if resp.succeeded() {
            return header_revision(&resp);
        }
        match first_get(&resp).unwrap_or_default().first() {
            None => Err(Error::NotFound(key.to_string())),
            Some(current) => Err(Error::Conflict {
                key: key.to_string(),
                expected: expected_revision,
                current: Some(self.key_value(current)?),
            }),
        }
    }

    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<(KeyValue, i64)> {
        let k = self.full_key(key);
        let mut when = vec![Compare::version(k.clone(), CompareOp::Greater, 0)];
        if let Some(expected) = expected_revision {
            when.push(Compare::mod_revision(k.clone(), CompareOp::Equal, expected));
        }
        let txn = Txn::new()
            .when(when)
            .and_then([TxnOp::delete(
                k.clone(),
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(k, None)]);
        let resp = self.txn(txn).await?;
        if resp.succeeded() {
            let revision = header_revision(&resp)?;
            let prev = match resp.op_responses().into_iter().next() {
                Some(TxnOpResponse::Delete(mut del)) => del.take_prev_kvs().into_iter().next(),
                _ => None,
            };
            let prev = prev.ok_or_else(|| {
                Error::Internal(format!("etcd deleted {key} without returning its value"))
            })?;
            return Ok((self.key_value(&prev)?, revision));
        }
        match first_get(&resp).unwrap_or_default().first() {
            None => Err(Error::NotFound(key.to_string())),
            Some(current) => Err(Error::Conflict {
                key: key.to_string(),
                expected: expected_revision.unwrap_or(0),
                current: Some(self.key_value(current)?),
            }),
        }
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> Result<BoxStream<'static, Result<WatchEvent>>> {
        let (key, end) = self.prefix_range(prefix);
        let changes = self.open_watch(key, end, from_revision, false).await?;
        Ok(changes
            .flat_map(|changes| {
                futures::stream::iter(match changes {
                    Ok(changes) => changes.events.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(e) => vec![Err(e)],
                })
            })
            .boxed())
    }

    async fn current_revision(&self) -> Result<i64> {
        // A count-only read of one (missing) key: the header carries the store's revision.
        let resp = self
            .range(vec![0], GetOptions::new().with_count_only())
            .await
            .map_err(map_err)?;
        resp.header()
            .map(|h| h.revision())
            .ok_or_else(|| Error::Internal("etcd response without header".into()))
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        if revision <= 0 {
            return Ok(());
        }
        let mut kv = self.kv.clone();
        match self.timed(kv.compact(revision, None)).await {
            Ok(_) => {
                self.saw_compaction(revision);
                Ok(())
            }
            // Already compacted at or past `revision`: the history is gone either way.
            Err(e) if is_compacted(&e) => {
                self.saw_compaction(revision);
                Ok(())
            }
            Err(e) => Err(map_err(e)),
        }
    }

    async fn count(&self, prefix: &str) -> Result<usize> {
        let (start, end) = self.prefix_range(prefix);
        let resp = self
            .range(start, GetOptions::new().with_range(end).with_count_only())
            .await
            .map_err(map_err)?;
        Ok(usize::try_from(resp.count()).unwrap_or(0))
    }
}

/// The changes of one etcd watch response (see [`EtcdStore::watch_keyspace`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Changes to this store's keys, in revision order.
    pub events: Vec<WatchEvent>,
    /// The highest revision of any change in the response, inside the store's prefix or not.
    pub revision: i64,
}

/// One watch: the etcd stream plus changes decoded but not yet handed out.
struct WatchState {
    store: EtcdStore,
    stream: WatchStream,
    /// The `from_revision` the watch was asked for, for [`Error::Expired`].
    requested: i64,
    /// The watch covers all of etcd: changes outside the store's prefix only count as revisions.
    whole_keyspace: bool,
    pending: VecDeque<Result<Changes>>,
    /// Set after an error: the error is the stream's last item.
    done: bool,
}

impl WatchState {
    async fn next(&mut self) -> Option<Result<Changes>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.done {
                return None;
            }
            match self.stream.message().await {
                Ok(Some(resp)) => self.handle(resp),
                Ok(None) => self.fail(Error::Unavailable("etcd closed the watch stream".into())),
                Err(e) => self.fail(match map_err(e) {
                    Error::Unavailable(m) | Error::Internal(m) => {
                        Error::Unavailable(format!("watch interrupted: {m}"))
                    }
                    other => other,
                }),
            }
        }
    }

    fn fail(&mut self, error: Error) {
        self.pending.push_back(Err(error));
        self.done = true;
    }

    fn handle(&mut self, resp: WatchResponse) {
        if resp.compact_revision() > 0 {
            self.store.saw_compaction(resp.compact_revision());
            return self.fail(Error::Expired {
                requested: self.requested,
                oldest: resp.compact_revision(),
            });
        }
        if resp.canceled() {
            return self.fail(Error::Unavailable(format!(
                "etcd cancelled the watch: {}",
                resp.cancel_reason()
            )));
        }
        if resp.events().is_empty() {
            return;
        }
        let mut changes = Changes {
            events: Vec::with_capacity(resp.events().len()),
            revision: 0,
        };
        for event in resp.events() {
            match self.event(event) {
                Ok((revision, event)) => {
                    changes.revision = changes.revision.max(revision);
                    changes.events.extend(event);
                }
                Err(e) => return self.fail(e),
            }
        }
        self.pending.push_back(Ok(changes));
    }

    /// The revision of an etcd event and, if its key is the store's, the change it makes.
    fn event(&self, event: &etcd_client::Event) -> Result<(i64, Option<WatchEvent>)> {
        let kv = event
            .kv()
            .ok_or_else(|| Error::Internal("etcd watch event without key-value".into()))?;
        if self.whole_keyspace && !kv.key().starts_with(self.store.prefix.as_bytes()) {
            return Ok((kv.mod_revision(), None));
        }
        let key = self.store.user_key(kv.key())?;
        let prev_value = event
            .prev_kv()
            .map(|prev| Bytes::copy_from_slice(prev.value()));
        let change = match event.event_type() {
            EtcdEventType::Put => {
                let added = kv.create_revision() == kv.mod_revision();
                WatchEvent {
                    event_type: if added {
                        EventType::Added
                    } else {
                        EventType::Modified
                    },
                    key,
                    value: Bytes::copy_from_slice(kv.value()),
                    prev_value: if added { None } else { prev_value },
                    revision: kv.mod_revision(),
                }
            }
            EtcdEventType::Delete => {
                // Without the previous value a watcher cannot tell what was deleted (upstream
                // treats this as an error too); it only happens when that value was compacted.
                let value = match &prev_value {
                    Some(v) => v.clone(),
                    // The keyspace watch asks for no previous values (see open_watch).
                    None if self.whole_keyspace => Bytes::new(),
                    None => {
                        return Err(Error::Internal(format!(
                            "etcd delete event for {key} at revision {} without previous value",
                            kv.mod_revision()
                        )))
                    }
                };
                WatchEvent {
                    event_type: EventType::Deleted,
                    key,
                    value,
                    prev_value,
                    revision: kv.mod_revision(),
                }
            }
        };
        Ok((kv.mod_revision(), Some(change)))
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        let cases: &[(&[u8], &[u8])] = &[
            (b"/registry/pods/", b"/registry/pods0"),
            (b"a", b"b"),
            (b"a\xff", b"b"),
            (b"a\xff\xff", b"b"),
            (b"\xff", b"\0"),
            (b"", b"\0"),
        ];
        for (prefix, end) in cases {
            assert_eq!(prefix_end(prefix), end.to_vec(), "prefix {prefix:?}");
        }
    }
}
