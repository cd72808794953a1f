//! Watch: newline-delimited JSON events over a chunked response, as upstream serves them.
//! Initial state for `resourceVersion` unset or "0" (synthetic ADDED events), replay from a
//! revision, selector transitions (an object that stops matching is DELETED for this watcher),
//! bookmarks, `timeoutSeconds`, and a 410 `Expired` ERROR event when the revision is too old.

use super::{ListParams, Registry};
use crate::request::Target;
use crate::table::{self, As, IncludeObject};
use apimachinery::errors::ApiError;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use storage::EventType;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub struct WatchParams {
    pub list: ListParams,
    pub resource_version: Option<String>,
    pub allow_bookmarks: bool,
    pub send_initial_events: bool,
    pub timeout: Duration,
    pub render: As,
    pub include: IncludeObject,
    pub bookmark_interval: Duration,
}

struct Renderer {
    target: Target,
    render: As,
    include: IncludeObject,
    headers_sent: bool,
}

impl Renderer {
    fn event(&mut self, kind: &str, obj: &Value) -> Bytes {
        let r = self.target.resource;
        let object = match self.render {
            As::Object => obj.clone(),
            As::PartialObjectMetadata => table::partial_metadata(obj),
            As::Table => {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(json!(""));
                let t = table::table(
                    r.group,
                    r.kind,
                    std::slice::from_ref(obj),
                    json!({"resourceVersion": rv}),
                    !self.headers_sent,
                    self.include,
                );
                self.headers_sent = true;
                t
            }
        };
        let mut line =
            serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }

    fn bookmark(&self, rev: i64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rev.to_string(), "creationTimestamp": null});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let (av, kind) = match self.render {
            As::Table => ("meta.k8s.io/v1".to_string(), "Table".to_string()),
            _ => (
                self.target.api_version(),
                self.target.resource.kind.to_string(),
            ),
        };
        let obj = json!({"kind": kind, "apiVersion": av, "metadata": meta});
        let mut line =
            serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
        line.push(b'\n');
        Bytes::from(line)
    }
}

fn error_event(e: &ApiError) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": "ERROR", "object": e.to_status()})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Start a watch; returns a receiver of encoded event lines. Errors known before the stream
/// starts (bad parameters) are returned directly.
pub async fn start(
    reg: Arc<Registry>,
    t: Target,
    p: WatchParams,
    shutdown: CancellationToken,
) -> Result<mpsc::Receiver<Bytes>, ApiError> {
    let rv = p.resource_version.clone().filter(|s| !s.is_empty());
    let initial = p.send_initial_events || rv.is_none() || rv.as_deref() == Some("0");
    let start_rev = match (&rv, initial) {
        (Some(rv), false) => crate::codec::parse_rv(rv)?,
        _ => 0,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let mut r = Renderer {
            target: t.clone(),
            render: p.render,
            include: p.include,
            headers_sent: false,
        };
        let mut from = start_rev;
        if initial {
            match reg
                .list(
                    &t,
                    &ListParams {
                        label: p.list.label.clone(),
                        field: p.list.field.clone(),
                        ..Default::default()
                    },
                )
                .await
            {
                Ok(list) => {
                    for item in &list.items {
                        let obj: Value = serde_json::from_slice(&item.to_vec()).unwrap_or_default();
                        if tx.send(r.event("ADDED", &obj)).await.is_err() {
                            return;
                        }
                    }
                    from = list.revision;
                    if p.send_initial_events
                        && p.allow_bookmarks
                        && tx.send(r.bookmark(from, true)).await.is_err()
                    {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.send(error_event(&e)).await;
                    return;
                }
            }
        }
        let prefix = t.resource.key_prefix(t.namespace.as_deref());
        let mut stream = match reg.store.watch(&prefix, from).await {
            Ok(s) => s,
            Err(storage::Error::Expired { requested, oldest }) => {
                let _ = tx
                    .send(error_event(&ApiError::too_old_resource_version(
                        requested, oldest,
                    )))
                    .await;
                return;
            }
            Err(e) => {
                let _ = tx
                    .send(error_event(&ApiError::internal(e.to_string())))
                    .await;
                return;
            }
        };
        let deadline = tokio::time::sleep(p.timeout);
        tokio::pin!(deadline);
        let mut bookmarks = tokio::time::interval(p.bookmark_interval);
        bookmarks.tick().await;
        // Like upstream's cacheWatcher, one more bookmark 2 s before the watch times out, so a
        // client restarting the watch resumes from a recent revision.
        let pretimeout = tokio::time::sleep(p.timeout.saturating_sub(Duration::from_secs(2)));
        tokio::pin!(pretimeout);
        let mut pretimeout_due = p.allow_bookmarks && p.timeout > Duration::from_secs(2);
        let mut last_rev = from;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
                _ = bookmarks.tick(), if p.allow_bookmarks => {
                    if tx.send(r.bookmark(last_rev, false)).await.is_err() { return; }
                }
                _ = &mut pretimeout, if pretimeout_due => {
                    pretimeout_due = false;
                    if tx.send(r.bookmark(last_rev, false)).await.is_err() { return; }
                }
                ev = stream.next() => {
                    let ev = match ev {
                        None => return,
                        Some(Ok(ev)) => ev,
                        Some(Err(storage::Error::Expired { requested, oldest })) => {
                            let _ = tx.send(error_event(&ApiError::too_old_resource_version(requested, oldest))).await;
                            return;
                        }
                        Some(Err(e)) => {
                            let _ = tx.send(error_event(&ApiError::internal(e.to_string()))).await;
                            return;
                        }
                    };
                    last_rev = ev.revision;
                    let decode = |b: &[u8]| -> Option<Value> {
                        let v = crate::codec::decode_stored(b, ev.revision).ok()?;
                        Some(if super::conversion::needs_conversion(t.resource, &t.version) { super::conversion::from_storage(t.resource, &t.version, v) } else { v })
                    };
                    let Some(obj) = decode(&ev.value) else { continue };
                    let now_match = reg.matches(t.resource, &obj, &p.list);
                    let kind = match ev.event_type {
                        EventType::Added => now_match.then_some("ADDED"),
                        EventType::Deleted => now_match.then_some("DELETED"),
                        EventType::Modified => {
                            let was = ev.prev_value.as_deref().and_then(decode).is_some_and(|prev| reg.matches(t.resource, &prev, &p.list));
                            match (was, now_match) {
                                (true, true) => Some("MODIFIED"),
                                (false, true) => Some("ADDED"),
                                (true, false) => Some("DELETED"),
                                (false, false) => None,
                            }
                        }
                    };
                    if let Some(kind) = kind {
                        if tx.send(r.event(kind, &obj)).await.is_err() { return; }
                    }
                }
            }
        }
    });
    Ok(rx)
}
