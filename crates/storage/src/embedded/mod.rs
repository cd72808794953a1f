//! The default storage backend: an embedded, crash-safe store inside the API server process.
//!
//! Durability comes from one [redb] file (`<dir>/store.redb`) holding only the *current*
//! objects and the global revision. Every acknowledged write has been committed with
//! [`redb::Durability::Immediate`] (fsync) before the reply, and redb's copy-on-write commit
//! means a crash (even `kill -9`) at any moment leaves the file at the last committed batch.
//! Concurrent writes share one transaction and one fsync (group commit, see `writer`).
//!
//! Reads never touch the disk: the whole current state lives in memory (loaded at open), and
//! `get`/`list` are served from it under a read lock: `get` is one hash lookup, whatever the
//! store's size; `list` is `O(log n + page)`. [`Storage::count`] and a first page's
//! `remaining` are O(1) for a "directory" (a prefix ending in `/`); otherwise they walk the keys
//! under the prefix.
//!
//! History is only an in-memory ring of the last [`EmbeddedOptions::history_events`] events
//! (fewer if they would keep more than [`EmbeddedOptions::history_bytes`] alive):
//! - `watch(prefix, from)` replays retained events with a revision greater than `from`, then
//!   continues live, with no gap and no duplicate; `from` older than the ring answers
//!   [`Error::Expired`] with `oldest` = the oldest retained revision (watching from `oldest - 1`
//!   is the oldest accepted start). A watcher that falls so far behind that the ring dropped
//!   events it had not read gets an `Expired` item and its stream ends.
//! - `list` at `revision` 0 or the current revision reads the live map; at an older revision
//!   still covered by the ring it is served exactly (newer events are undone); older than that
//!   it answers [`Error::Expired`]; a revision newer than the current one answers
//!   [`Error::Unavailable`] (upstream's retryable "too large resource version").
//! - After a restart the ring is empty: watches may start from the current revision only.
//!
//! Shutdown: dropping the store closes the write queue; the writer thread finishes the queued
//! writes, closes the file and exits, and `Drop` waits for it (at most one commit), so the
//! directory can be reopened at once. Open watch streams then end. A write whose future is
//! dropped after it was queued may still be applied (as with etcd).

mod node;
mod state;
mod writer;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};

use self::state::State;
use self::writer::{Op, Outcome, Request, Writer, META, OBJECTS};
use crate::{Error, KeyValue, ListOptions, ListResult, Result, Storage, WatchEvent};

/// The name of the database file inside the store's directory.
pub const FILE_NAME: &str = "store.redb";

/// Tuning for [`EmbeddedStore::open_with`]. The defaults suit the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// How many recent events are kept in memory for watch replay, lagging watchers and lists at
    /// older revisions. Events share their objects with the current state, so an event costs
    /// one 32-byte slot unless it holds an object that has since been replaced or deleted.
    pub history_events: usize,
    /// Bound on the memory the history keeps alive beyond the current objects (superseded and
    /// deleted objects, slots), in bytes: whichever bound is hit first trims it.
    pub history_bytes: usize,
    /// At most this many writes share one transaction (one fsync).
    pub max_batch: usize,
    /// A batch stops taking more writes once their keys and values reach this many bytes.
    pub max_batch_bytes: usize,
    /// Writes queued for the writer before `create`/`update`/`delete` wait for room.
    pub queue_depth: usize,
    /// redb's page cache, in bytes. Reads are served from memory, so this only needs to cover
    /// the pages a commit touches; keeping it small keeps the RSS close to the data size.
    pub cache_bytes: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            // 50,000 slots are ~1.5 MiB: a create-only burst of that size stays replayable.
            history_events: 50_000,
            // Under update churn the ring keeps superseded values alive, up to this bound:
            // ~24,000 updates of 0.5 KiB objects, ~4,000 of 4 KiB ones, far more than
            // upstream's per-resource watch cache (100 events by default). A watcher that falls
            // further behind gets 410 Gone and re-lists; a larger bound would only add to the
            // API server's RSS beyond its data.
            history_bytes: 16 << 20,
            max_batch: 1024,
            max_batch_bytes: 16 << 20,
            queue_depth: 8192,
            cache_bytes: 8 << 20,
        }
    }
}

/// State shared by the store, its writer thread and its watch streams.
#[derive(Debug)]
pub(crate) struct Shared {
    state: RwLock<State>,
}

impl Shared {
    // A panic while holding the lock cannot leave `State` half-updated in a way that matters
    // more than stopping the API server would, so poisoning is ignored.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The embedded store. See the module documentation for its guarantees.
#[derive(Debug)]
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    queue: Option<mpsc::Sender<Request>>,
    revision_rx: watch::Receiver<i64>,
    writer: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir` with default options.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, EmbeddedOptions::default())
    }

    /// Opens (creating if needed) the store in `dir`: loads every object into memory and starts
    /// the writer thread. Fails with [`Error::Unavailable`] if the file is held by another
    /// process or cannot be read.
    pub fn open_with(dir: &Path, options: EmbeddedOptions) -> Result<Self> {
        let started = Instant::now();
        let unavailable = |what: &str, e: &dyn std::fmt::Display| {
            Error::Unavailable(format!("{what} {}: {e}", dir.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| unavailable("creating", &e))?;
        let path = dir.join(FILE_NAME);
        let db = redb::Builder::new()
            .set_cache_size(options.cache_bytes)
            .create(&path)
            .map_err(|e| unavailable("opening", &e))?;
        // Make sure both tables exist so that reads never meet a missing table.
        let init = || -> Result<(), redb::Error> {
            let txn = db.begin_write()?;
            txn.open_table(OBJECTS)?;
            txn.open_table(META)?;
            txn.commit()?;
            Ok(())
        };
        init().map_err(|e| unavailable("initializing", &e))?;
        // The file may have just been created: make its directory entry durable too, before
        // any write is acknowledged.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| unavailable("syncing", &e))?;
        let (map, revision) = writer::load(&db).map_err(|e| unavailable("loading", &e))?;
        let objects = map.len();

        let shared = Arc::new(Shared {
            state: RwLock::new(State::new(
                map,
                revision,
                options.history_events,
                options.history_bytes,
            )),
        });
        let (queue_tx, queue_rx) = mpsc::channel(options.queue_depth.max(1));
        let (revision_tx, revision_rx) = watch::channel(revision);
        let writer = Writer {
            db,
            shared: shared.clone(),
            rx: queue_rx,
            revision_tx,
            max_batch: options.max_batch.max(1),
            max_batch_bytes: options.max_batch_bytes,
        };
        let handle = std::thread::Builder::new()
            .name("embedded-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| unavailable("starting the writer for", &e))?;
        tracing::info!(path = %path.display(), objects, revision, elapsed_ms = started.elapsed().as_millis() as u64, "opened embedded store");
        Ok(Self {
            shared,
            queue: Some(queue_tx),
            revision_rx,
            writer: Some(handle),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Finishes queued writes, stops the writer thread and closes the file, without blocking
    /// the async runtime (dropping the store does the same, blocking for at most one commit).
    pub async fn close(mut self) {
        self.queue.take();
        if let Some(handle) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    async fn submit(&self, op: Op) -> Result<Outcome> {
        let closed = || Error::Unavailable("embedded store is closed".into());
        let queue = self.queue.as_ref().ok_or_else(closed)?;
        let (reply, rx) = oneshot::channel();
        queue
            .send(Request { op, reply })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                tracing::error!("embedded store writer panicked");
            }
        }
    }
}

#[async_trait]
impl Storage for EmbeddedStore {
    async fn create(&self, key: &str, value: Bytes) -> Result<i64> {
        match self
            .submit(Op::Create {
                key: key.to_string(),
                value,
            })
            .await?
        {
            Outcome::Written(rev) => Ok(rev),
            Outcome::Deleted(..) => Err(Error::Internal("create answered as a delete".into())),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        Ok(self.shared.read().get(key))
    }

    async fn list(&self, prefix: &str, opts: &ListOptions) -> Result<ListResult> {
        self.shared.read().list(prefix, opts)
    }

    async fn update(&self, key: &str, value: Bytes, expected_revision: i64) -> Result<i64> {
        match self
            .submit(Op::Update {
                key: key.to_string(),
                value,
                expected: expected_revision,
            })
            .await?
        {
            Outcome::Written(rev) => Ok(rev),
            Outcome::Deleted(..) => Err(Error::Internal("update answered as a delete".into())),
        }
    }

    async fn delete(&self, key: &str, expected_revision: Option<i64>) -> Result<(KeyValue, i64)> {
        match self
            .submit(Op::Delete {
                key: key.to_string(),
                expected: expected_revision,
            })
            .await?
        {
            Outcome::Deleted(kv, rev) => Ok((kv, rev)),
            Outcome::Written(_) => Err(Error::Internal("delete answered as a write".into())),
        }
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: i64,
    ) -> Result<BoxStream<'static, Result<WatchEvent>>> {
        let next = {
            let state = self.shared.read();
            if from_revision == 0 {
                state.revision + 1
            } else if from_revision < state.oldest() - 1 {
                return Err(Error::Expired {
                    requested: from_revision,
                    oldest: state.oldest(),
                });
            } else {
                from_revision + 1
            }
        };
        let watcher = Watcher {
            shared: self.shared.clone(),
            revision_rx: self.revision_rx.clone(),
            prefix: prefix.to_string(),
            next,
            buffer: VecDeque::new(),
            done: false,
        };
        Ok(futures::stream::unfold(watcher, Watcher::next).boxed())
    }

    async fn current_revision(&self) -> Result<i64> {
        Ok(self.shared.read().revision)
    }

    async fn compact(&self, revision: i64) -> Result<()> {
        self.shared.write().compact(revision);
        Ok(())
    }

    async fn count(&self, prefix: &str) -> Result<usize> {
        Ok(self.shared.read().count(prefix))
    }
}

/// Reads one watcher's events straight from the ring: replay and live delivery are the same
/// loop, so there is no gap or duplicate between them, and nothing is buffered per watcher
/// beyond one chunk.
struct Watcher {
    shared: Arc<Shared>,
    revision_rx: watch::Receiver<i64>,
    prefix: String,
    /// The next revision to deliver.
    next: i64,
    buffer: VecDeque<WatchEvent>,
    done: bool,
}

/// Events scanned per lock acquisition, to keep the writer from waiting on slow watchers.
const SCAN_CHUNK: usize = 1024;

impl Watcher {
    async fn next(mut self) -> Option<(Result<WatchEvent>, Self)> {
        loop {
            if let Some(ev) = self.buffer.pop_front() {
                return Some((Ok(ev), self));
            }
            if self.done {
                return None;
            }
            // Mark the current revision seen *before* reading the ring: a write published after
            // this point wakes `changed` below.
            self.revision_rx.borrow_and_update();
            let catchup = self
                .shared
                .read()
                .events_since(self.next, &self.prefix, SCAN_CHUNK);
            match catchup {
                Err(e) => {
                    self.done = true;
                    return Some((Err(e), self));
                }
                Ok(c) => {
                    self.next = c.next;
                    self.buffer.extend(c.events);
                    if self.buffer.is_empty()
                        && c.caught_up
                        && self.revision_rx.changed().await.is_err()
                    {
                        // The store closed; everything it published was read above.
                        self.done = true;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
