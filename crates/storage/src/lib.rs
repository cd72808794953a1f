//! The API server's storage layer, modelled on upstream's `storage.Interface` over etcd3.
//!
//! Keys are strings laid out as upstream lays them out in etcd
//! (`/registry/<resource>/<namespace>/<name>`, or `/registry/<resource>/<name>` for
//! cluster-scoped resources). Values are opaque bytes (the API server stores JSON with
//! `metadata.resourceVersion` stripped: the revision is the store's, never the value's).
//!
//! Revisions are one global, strictly increasing counter per store (etcd's revision), bumped by
//! every create, update and delete. An object's `resourceVersion` is its `mod_revision`.
//!
//! Guarantees every backend gives, checked by [`conformance`]:
//! - a write is acknowledged only once it is durable;
//! - `create` fails with [`Error::AlreadyExists`] if the key exists; `update`/`delete` with a
//!   precondition fail with [`Error::Conflict`] when the stored `mod_revision` differs;
//! - `watch(prefix, rev)` delivers, in revision order and exactly once, every change under
//!   `prefix` with a revision greater than `rev`, then live changes; if `rev` is older than the
//!   retained history it fails with [`Error::Expired`] (the API server turns that into 410);
//! - `list` is a consistent snapshot at the returned revision.

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

pub mod cache;
pub mod conformance;
pub mod embedded;
pub mod etcd;
pub mod testing;

/// A stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision at which the key was created (stays the same across updates).
    pub create_revision: i64,
    /// Revision of the last change to the key: the object's resourceVersion.
    pub mod_revision: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub event_type: EventType,
    pub key: String,
    /// The value after the change; for `Deleted`, the last value before deletion.
    pub value: Bytes,
    /// The value before the change (`Modified` and `Deleted`), so that watchers filtering by
    /// selectors can turn "stopped matching" into a deletion as upstream does.
    pub prev_value: Option<Bytes>,
    /// The revision of this change. For `Deleted`, the revision of the deletion itself.
    pub revision: i64,
}

/// Options for [`Storage::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Return only keys strictly greater than this one (pagination's continue point).
    pub start_after: Option<String>,
    /// At most this many items; 0 means no limit.
    pub limit: usize,
    /// Read at exactly this revision (0 = the latest). Backends without history answer
    /// [`Error::Expired`] for a revision older than what they can serve.
    pub revision: i64,
}

impl ListOptions {
    /// Where a listing of `prefix` starts: after `start_after` when that is not before the
    /// prefix, else at the prefix itself.
    pub(crate) fn start<'a>(&'a self, prefix: &'a str) -> std::ops::Bound<&'a str> {
        match &self.start_after {
            Some(after) if after.as_str() >= prefix => std::ops::Bound::Excluded(after.as_str()),
            _ => std::ops::Bound::Included(prefix),
        }
    }

    /// The most items to return (`limit`, or no bound for 0).
    pub(crate) fn max_items(&self) -> usize {
        if self.limit == 0 {
            usize::MAX
        } else {
            self.limit
        }
    }
}

/// The state of one stored object in an in-memory store (the embedded store, the watch cache).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub value: Bytes,
    pub create_revision: i64,
    pub mod_revision: i64,
}

impl Entry {
    pub fn to_key_value(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: i64,
    /// How many keys under the prefix come after the last returned item (0 = complete).
    pub remaining: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    /// The precondition on `mod_revision` failed; carries the current stored value.
    #[error("conflict on key {key}: expected revision {expected}, found {}", current.as_ref().map(|c| c.mod_revision).unwrap_or(0))]
    Conflict {
        key: String,
        expected: i64,
        current: Option<KeyValue>,
    },
    /// The requested revision has been compacted away: clients must re-list.
    #[error("required revision {requested} has been compacted (oldest available {oldest})")]
    Expired { requested: i64, oldest: i64 },
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("storage internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The storage interface used by the API server's generic registry.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Store `value` under a new `key`; returns the new revision.
    async fn create(&self, key: &str, value: Bytes) -> Result<i64>;

    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// A copy of `key` that may be stale (a cache's), without asking the backing store: the
    /// starting point of a read-modify-write, whose revision precondition catches staleness,
    /// as upstream's cacher hands etcd3's GuaranteedUpdate its cached object. None when there
    /// is no such copy (the default): read with [`Storage::get`].
    fn cached(&self, _key: &str) -> Option<KeyValue> {
        None
    }

    /// Keys starting with `prefix`, in key order.
    async fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult>;

    /// Replace the value of an existing key if its `mod_revision` is `expected_revision`.
    /// Returns the new revision. Missing key: [`Error::NotFound`]; mismatch: [`Error::Conflict`].
    async fn update(&self, key: &str, value: Bytes, expected_revision: i64) -> Result<i64>;

    /// Delete a key, optionally only if its `mod_revision` matches. Returns the deleted value
    /// and the revision of the deletion.
    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<(KeyValue, i64)>;

    /// Changes under `prefix` with revision > `from_revision`, then live changes, until the
    /// stream is dropped. `from_revision` 0 means "from now".
    async fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> Result<BoxStream<'static, Result<WatchEvent>>>;

    /// The store's current revision.
    async fn current_revision(&self) -> Result<i64>;

    /// Drop history older than `revision` (the store may also do this on its own).
    async fn compact(&self, revision: i64) -> Result<()>;

    /// Number of keys under `prefix` (for metrics and `remainingItemCount`).
    async fn count(&self, prefix: &str) -> Result<usize> {
        Ok(self
            .list(prefix, &ListOptions::default())
            .await?
            .items
            .len())
    }

    /// Read-modify-write with retries: `try_update` gets the current value (None if absent)
    /// and returns the new value, or an error to abort. Retries on conflicts caused by
    /// concurrent writers; `try_update` must therefore be pure. Returns the stored result.
    async fn guaranteed_update(
        &self,
        key: &str,
        try_update: &(dyn for<'k> Fn(Option<&'k KeyValue>) -> std::result::Result<Option<Bytes>, UpdateAbort>
              + Send
              + Sync),
    ) -> std::result::Result<Option<KeyValue>, UpdateError> {
        let mut current = self.get(key).await?;
        // Like upstream's GuaranteedUpdate, keep retrying while others win: with group commit
        // one writer of a contended key wins per batch, so a fixed small bound would starve
        // the unlucky ones. Every round some writer makes progress; the bound only guards
        // against a broken backend.
        for _ in 0..100_000 {
            let new = match try_update(current.as_ref()) {
                Ok(Some(v)) => v,
                Ok(None) => return Ok(current),
                Err(abort) => return Err(UpdateError::Aborted(abort)),
            };
            let res = match &current {
                Some(cur) => self.update(key, new.clone(), cur.mod_revision).await,
                None => self.create(key, new.clone()).await,
            };
            match res {
                Ok(rev) => {
                    let create_revision =
                        current.as_ref().map(|c| c.create_revision).unwrap_or(rev);
                    return Ok(Some(KeyValue {
                        key: key.to_string(),
                        value: new,
                        create_revision,
                        mod_revision: rev,
                    }));
                }
                Err(Error::Conflict { current: c, .. }) => current = c,
                Err(Error::AlreadyExists(_)) | Err(Error::NotFound(_)) => {
                    current = self.get(key).await?
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Internal(format!("too many conflicts updating {key}")).into())
    }
}

/// A caller-defined reason to stop a [`Storage::guaranteed_update`] (validation failed, …).
pub type UpdateAbort = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error(transparent)]
    Storage(#[from] Error),
    #[error("update aborted: {0}")]
    Aborted(UpdateAbort),
}
