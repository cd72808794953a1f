//! The single writer: group commit of queued writes into one durable redb transaction.
//!
//! One OS thread owns the redb [`Database`]. It takes the first queued request, drains whatever
//! else is queued (up to `max_batch`), validates each operation against the in-memory state
//! plus the earlier operations of the same batch, assigns consecutive revisions, writes them all
//! and the new revision in one transaction, commits once (fsync, [`Durability::Immediate`]),
//! publishes to the in-memory state and watchers, and only then replies. A reply therefore means
//! the write is durable *and* visible to every later read.
//!
//! The thread exits once every sender is dropped and the queue is drained; dropping the
//! `watch::Sender` it owns ends every open watch stream.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::{mpsc, oneshot, watch};

use super::state::{Event, Node};
use super::Shared;
use crate::{Error, EventType, KeyValue, Result};

/// Objects: key -> `create_revision (i64 LE) | mod_revision (i64 LE) | value` (a node's
/// [`Node::record`]).
pub(crate) const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
/// Store metadata; [`REVISION_KEY`] holds the global revision.
pub(crate) const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
pub(crate) const REVISION_KEY: &str = "revision";

#[derive(Debug)]
pub(crate) enum Op {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: i64,
    },
    Delete {
        key: String,
        expected: Option<i64>,
    },
}

impl Op {
    /// Roughly what this operation adds to a transaction.
    fn size(&self) -> usize {
        match self {
            Op::Create { key, value } | Op::Update { key, value, .. } => key.len() + value.len(),
            Op::Delete { key, .. } => key.len(),
        }
    }

    fn key(&self) -> &str {
        match self {
            Op::Create { key, .. } | Op::Update { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

#[derive(Debug)]
pub(crate) enum Outcome {
    Written(i64),
    Deleted(KeyValue, i64),
}

#[derive(Debug)]
pub(crate) struct Request {
    pub op: Op,
    pub reply: oneshot::Sender<Result<Outcome>>,
}

pub(crate) struct Writer {
    pub db: Database,
    pub shared: Arc<Shared>,
    pub rx: mpsc::Receiver<Request>,
    pub revision_tx: watch::Sender<i64>,
    pub max_batch: usize,
    pub max_batch_bytes: usize,
}

impl Writer {
    pub fn run(mut self) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Some(first) = self.rx.blocking_recv() {
            let mut bytes = first.op.size();
            batch.push(first);
            while batch.len() < self.max_batch && bytes < self.max_batch_bytes {
                match self.rx.try_recv() {
                    Ok(req) => {
                        bytes += req.op.size();
                        batch.push(req);
                    }
                    Err(_) => break,
                }
            }
            self.process(&mut batch);
        }
        tracing::debug!("embedded store writer stopped");
    }

    fn process(&mut self, batch: &mut Vec<Request>) {
        let n = batch.len();
        let span = tracing::debug_span!("group_commit", ops = n);
        let _enter = span.enter();

        // Validate against the published state plus the batch's own earlier writes. The writer
        // is the only mutator, so the state cannot change under us between here and `apply`.
        let mut replies: Vec<(oneshot::Sender<Result<Outcome>>, Result<Outcome>)> =
            Vec::with_capacity(n);
        let mut events: Vec<Event> = Vec::with_capacity(n);
        {
            let state = self.shared.read();
            let mut revision = state.revision;
            let mut overlay: HashMap<String, Option<Node>> = HashMap::new();
            for Request { op, reply } in batch.drain(..) {
                let current = match overlay.get(op.key()) {
                    Some(n) => n.clone(),
                    None => state.node(op.key()).cloned(),
                };
                let result = match op {
                    Op::Create { key, value } => match current {
                        Some(_) => Err(Error::AlreadyExists(key)),
                        None => {
                            revision += 1;
                            let node = Node::new(&key, revision, revision, &value);
                            overlay.insert(key, Some(node.clone()));
                            events.push(Event {
                                event_type: EventType::Added,
                                revision,
                                node,
                                prev: None,
                            });
                            Ok(Outcome::Written(revision))
                        }
                    },
                    Op::Update {
                        key,
                        value,
                        expected,
                    } => match current {
                        None => Err(Error::NotFound(key)),
                        Some(cur) if cur.mod_revision() != expected => {
                            let current = Some(cur.key_value_for(&key));
                            Err(Error::Conflict {
                                key,
                                expected,
                                current,
                            })
                        }
                        Some(cur) => {
                            revision += 1;
                            let node = Node::new(&key, cur.create_revision(), revision, &value);
                            overlay.insert(key, Some(node.clone()));
                            events.push(Event {
                                event_type: EventType::Modified,
                                revision,
                                node,
                                prev: Some(cur),
                            });
                            Ok(Outcome::Written(revision))
                        }
                    },
                    Op::Delete { key, expected } => match current {
                        None => Err(Error::NotFound(key)),
                        Some(cur) if expected.is_some_and(|e| e != cur.mod_revision()) => {
                            let current = Some(cur.key_value_for(&key));
                            Err(Error::Conflict {
                                key,
                                expected: expected.unwrap_or_default(),
                                current,
                            })
                        }
                        Some(cur) => {
                            revision += 1;
                            let deleted = cur.key_value_for(&key);
                            overlay.insert(key, None);
                            events.push(Event {
                                event_type: EventType::Deleted,
                                revision,
                                node: cur.clone(),
                                prev: Some(cur),
                            });
                            Ok(Outcome::Deleted(deleted, revision))
                        }
                    },
                };
                replies.push((reply, result));
            }
        }

        if !events.is_empty() {
            if let Err(e) = self.commit(&events) {
                tracing::error!(error = %e, ops = events.len(), "embedded store commit failed");
                let msg = format!("commit failed: {e}");
                for (_, result) in &mut replies {
                    if result.is_ok() {
                        *result = Err(Error::Unavailable(msg.clone()));
                    }
                }
                events.clear();
            }
        }
        if let Some(last) = events.last() {
            let revision = last.revision;
            self.shared.write().apply(events);
            self.revision_tx.send_replace(revision);
        }
        for (reply, result) in replies {
            // The caller may have given up waiting; the write stands regardless.
            let _ = reply.send(result);
        }
    }

    fn commit(&self, events: &[Event]) -> Result<(), redb::Error> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut objects = txn.open_table(OBJECTS)?;
            for ev in events {
                match ev.event_type {
                    EventType::Deleted => {
                        objects.remove(ev.key())?;
                    }
                    EventType::Added | EventType::Modified => {
                        objects.insert(ev.key(), ev.node.record())?;
                    }
                }
            }
            let mut meta = txn.open_table(META)?;
            if let Some(last) = events.last() {
                meta.insert(REVISION_KEY, last.revision)?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

/// Every stored object, in key order.
pub(crate) type Objects = Vec<Node>;

/// Loads every object and the revision; used once at open.
pub(crate) fn load(db: &Database) -> Result<(Objects, i64), redb::Error> {
    use redb::ReadableDatabase;
    let txn = db.begin_read()?;
    let meta = txn.open_table(META)?;
    let revision = meta.get(REVISION_KEY)?.map(|g| g.value()).unwrap_or(0);
    let objects = txn.open_table(OBJECTS)?;
    let mut items = Vec::with_capacity(usize::try_from(objects.len()?).unwrap_or(0));
    for item in objects.iter()? {
        let (k, v) = item?;
        let node = Node::from_record(k.value(), v.value()).ok_or_else(|| {
            redb::StorageError::Corrupted(format!("object {} has a truncated header", k.value()))
        })?;
        items.push(node);
    }
    Ok((items, revision))
}
