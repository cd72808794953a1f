//! Watch: newline-delimited JSON events over a chunked response, as upstream serves them.
//! Initial state for `resourceVersion` unset or "0" (synthetic ADDED events), replay from a
//! revision, selector transitions (an object that stops matching is DELETED for this watcher),
//! bookmarks, `timeoutSeconds`, and a 410 `Expired` ERROR event when the revision is too old.

use super::{ListParams, Registry};
use crate::codec::Projection;
use crate::request::Target;
use crate::resources::Resource;
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

    /// An event line around an object already encoded as JSON, as [`Renderer::event`] would
    /// write it for `As::Object` (serde_json writes a map's keys sorted: `object`, then
    /// `type`), without decoding and re-encoding the object.
    fn encoded_event(kind: &str, obj: &crate::codec::Encoded) -> Bytes {
        const HEAD: &[u8] = b"{\"object\":";
        let mut line = Vec::with_capacity(HEAD.len() + obj.len() + kind.len() + 12);
        line.extend_from_slice(HEAD);
        obj.write_to(&mut line);
        line.extend_from_slice(b",\"type\":\"");
        line.extend_from_slice(kind.as_bytes());
        line.extend_from_slice(b"\"}\n");
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
                        let line = if r.render == As::Object {
                            Renderer::encoded_event("ADDED", item)
                        } else {
                            let obj: Value =
                                serde_json::from_slice(&item.to_vec()).unwrap_or_default();
                            r.event("ADDED", &obj)
                        };
                        if tx.send(line).await.is_err() {
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
        // Objects served as stored (no conversion, plain object rendering) are written from
        // the stored bytes, and selectors read only the fields they name: no event is decoded
        // and re-encoded in full per watcher.
        let fast =
            r.render == As::Object && !super::conversion::needs_conversion(t.resource, &t.version);
        let projection = selector_projection(t.resource, &p.list);
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
                    let line = if fast {
                        fast_event(&reg, &t, &p.list, projection.as_ref(), &ev)
                    } else {
                        slow_event(&reg, &t, &p.list, &mut r, &ev)
                    };
                    if let Some(line) = line {
                        if tx.send(line).await.is_err() { return; }
                    }
                }
            }
        }
    });
    Ok(rx)
}

/// Which watch event, if any, `ev` is for a watcher with selectors `sel`, given whether the
/// object matches now and (for a modification) matched before: an object that starts or stops
/// matching is ADDED or DELETED for this watcher, as upstream's cacheWatcher does.
fn event_kind(
    ev: &storage::WatchEvent,
    now_match: bool,
    was_match: impl FnOnce() -> bool,
) -> Option<&'static str> {
    match ev.event_type {
        EventType::Added => now_match.then_some("ADDED"),
        EventType::Deleted => now_match.then_some("DELETED"),
        EventType::Modified => match (was_match(), now_match) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
    }
}

/// The parts of an object the watch's selectors read; `None` without selectors.
fn selector_projection(r: &Resource, sel: &ListParams) -> Option<Projection> {
    if sel.label.is_none() && sel.field.is_none() {
        return None;
    }
    let mut proj = Projection::default();
    if sel.label.is_some() {
        proj.add(&["metadata", "labels"]);
    }
    for req in sel.field.iter().flat_map(|f| f.requirements()) {
        for path in super::fields::field_paths(r, &req.field) {
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            proj.add(&path);
        }
    }
    // A selector naming no field at all (e.g. an empty one) still needs an object to test.
    if proj == Projection::default() {
        proj.add(&["metadata", "name"]);
    }
    Some(proj)
}

/// An event for a watcher served from stored bytes: selectors are tested on the projected
/// fields, and the line carries the stored object with its resourceVersion spliced in.
fn fast_event(
    reg: &Registry,
    t: &Target,
    sel: &ListParams,
    projection: Option<&Projection>,
    ev: &storage::WatchEvent,
) -> Option<Bytes> {
    let kind = match projection {
        None => match ev.event_type {
            EventType::Added => Some("ADDED"),
            EventType::Modified => Some("MODIFIED"),
            EventType::Deleted => Some("DELETED"),
        },
        Some(proj) => {
            let matches = |b: &[u8]| -> Option<bool> {
                Some(reg.matches(t.resource, &proj.decode(b).ok()?, sel))
            };
            // An undecodable object is skipped, as the full decode skipped it.
            let now_match = matches(&ev.value)?;
            event_kind(ev, now_match, || {
                ev.prev_value.as_deref().and_then(matches).unwrap_or(false)
            })
        }
    }?;
    Some(Renderer::encoded_event(
        kind,
        &crate::codec::Encoded::stored(ev.value.clone(), ev.revision),
    ))
}

/// An event for a watcher that needs the decoded object: conversion to the served version, or
/// Table and PartialObjectMetadata rendering.
fn slow_event(
    reg: &Registry,
    t: &Target,
    sel: &ListParams,
    r: &mut Renderer,
    ev: &storage::WatchEvent,
) -> Option<Bytes> {
    let decode = |b: &[u8]| -> Option<Value> {
        let v = crate::codec::decode_stored(b, ev.revision).ok()?;
        Some(
            if super::conversion::needs_conversion(t.resource, &t.version) {
                super::conversion::from_storage(t.resource, &t.version, v)
            } else {
                v
            },
        )
    };
    let obj = decode(&ev.value)?;
    let now_match = reg.matches(t.resource, &obj, sel);
    let kind = event_kind(ev, now_match, || {
        ev.prev_value
            .as_deref()
            .and_then(decode)
            .is_some_and(|prev| reg.matches(t.resource, &prev, sel))
    })?;
    Some(r.event(kind, &obj))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_kind;
    use apimachinery::selectors::{FieldSelector, LabelSelector};
    use serde_json::json;

    fn pod_target() -> Target {
        let r = by_kind("", "Pod").unwrap();
        Target {
            resource: r,
            version: "v1".into(),
            namespace: Some("d".into()),
            name: None,
            subresource: None,
            subpath: None,
        }
    }

    fn stored(obj: &Value) -> Bytes {
        crate::codec::encode_for_storage(obj)
    }

    fn event(ty: EventType, now: &Value, prev: Option<&Value>) -> storage::WatchEvent {
        storage::WatchEvent {
            event_type: ty,
            key: "/registry/pods/d/p".into(),
            value: stored(now),
            prev_value: prev.map(stored),
            revision: 42,
        }
    }

    fn renderer() -> Renderer {
        Renderer {
            target: pod_target(),
            render: As::Object,
            include: IncludeObject::Object,
            headers_sent: false,
        }
    }

    #[test]
    fn stored_bytes_events_equal_rendered_events() {
        let dir = tempfile::tempdir().unwrap();
        let store = storage::embedded::EmbeddedStore::open(dir.path()).unwrap();
        let alloc = super::super::allocator::Allocators::new(
            super::super::allocator::IpRange::parse("10.96.0.0/28").unwrap(),
            (30000, 30002),
        );
        let reg = Registry::new(Arc::new(store), alloc);
        let t = pod_target();
        let pending = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "d", "labels": {"app": "x"}, "managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {}}}]},
                             "spec": {"containers": [{"name": "c", "image": "i"}], "schedulerName": "default-scheduler"}, "status": {"phase": "Pending"}});
        let mut bound = pending.clone();
        bound["spec"]["nodeName"] = json!("n1");
        let mut done = bound.clone();
        done["status"]["phase"] = json!("Succeeded");
        let sels: Vec<(Option<&str>, Option<&str>)> = vec![
            (None, None),
            (Some("app=x"), None),
            (Some("app=y"), None),
            (None, Some("spec.nodeName=n1")),
            (None, Some("spec.nodeName=")),
            (None, Some("status.phase!=Succeeded,status.phase!=Failed")),
            (
                Some("app"),
                Some("metadata.name=p,spec.schedulerName=default-scheduler"),
            ),
        ];
        let evs = [
            event(EventType::Added, &pending, None),
            event(EventType::Modified, &bound, Some(&pending)),
            event(EventType::Modified, &done, Some(&bound)),
            event(EventType::Deleted, &done, Some(&done)),
        ];
        for (label, field) in sels {
            let sel = ListParams {
                label: label.map(|l| LabelSelector::parse(l).unwrap()),
                field: field.map(|f| FieldSelector::parse(f).unwrap()),
                ..Default::default()
            };
            let proj = selector_projection(t.resource, &sel);
            for ev in &evs {
                let slow = slow_event(&reg, &t, &sel, &mut renderer(), ev);
                let fast = fast_event(&reg, &t, &sel, proj.as_ref(), ev);
                let parse = |b: &Option<Bytes>| {
                    b.as_ref()
                        .map(|b| serde_json::from_slice::<Value>(b).unwrap())
                };
                assert_eq!(
                    parse(&fast),
                    parse(&slow),
                    "{label:?} {field:?} {:?}",
                    ev.event_type
                );
                assert!(fast.as_ref().is_none_or(|b| b.ends_with(b"\n")));
            }
        }
    }
}
