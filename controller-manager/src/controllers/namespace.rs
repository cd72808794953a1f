//! Namespace controller (upstream `pkg/controller/namespace`): empties a namespace being
//! deleted, then releases it.
//!
//! A namespace with a `deletionTimestamp` and the `kubernetes` finalizer in `spec.finalizers`
//! has every namespaced resource found by discovery deleted (`deletecollection`, or one by one
//! where that verb is not served), and its status conditions kept as upstream
//! (`NamespaceDeletionDiscoveryFailure`, `NamespaceDeletionGroupVersionParsingFailure`,
//! `NamespaceDeletionContentFailure`, `NamespaceContentRemaining`,
//! `NamespaceFinalizersRemaining`). Once nothing is left it calls `PUT
//! /api/v1/namespaces/{name}/finalize` without the `kubernetes` finalizer, after which the API
//! server removes the namespace. While content remains (graceful pod deletion, finalizers) the
//! namespace is looked at again shortly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, PartialObjectMeta};
use kube::discovery::verbs;
use kube::{Api, Client};
use serde_json::{json, Value};

use super::garbagecollector::{discover, ServedResource};
use crate::framework::{
    Action, BoxFuture, Change, Controller, ControllerContext, EventRecorder, EventType, Informer,
    ObjectKey, ReconcileContext, Reconciler, Result,
};

/// The finalizer this controller owns in `spec.finalizers`.
pub const KUBERNETES_FINALIZER: &str = "kubernetes";
/// How soon a namespace with content still terminating is looked at again.
pub const CONTENT_RECHECK: Duration = Duration::from_secs(2);

/// What one deletion pass found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeletionReport {
    pub discovery_error: Option<String>,
    /// Errors deleting content, per resource.
    pub content_errors: Vec<String>,
    /// Remaining objects per `resource.group`.
    pub remaining: BTreeMap<String, usize>,
    /// Remaining objects per finalizer.
    pub finalizers: BTreeMap<String, usize>,
}

impl DeletionReport {
    pub fn done(&self) -> bool {
        self.discovery_error.is_none()
            && self.content_errors.is_empty()
            && self.remaining.is_empty()
    }
}

fn condition(type_: &str, failed: bool, reason: &str, message: String) -> Value {
    json!({"type": type_, "status": if failed { "True" } else { "False" }, "reason": reason, "message": message})
}

/// Upstream's namespace deletion conditions for a report (without transition times).
pub fn conditions(r: &DeletionReport) -> Vec<Value> {
    let list = |m: &BTreeMap<String, usize>| {
        m.iter()
            .map(|(k, n)| format!("{k} has {n} resource instances"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    vec![
        match &r.discovery_error {
            Some(e) => condition(
                "NamespaceDeletionDiscoveryFailure",
                true,
                "DiscoveryFailed",
                format!("Discovery failed for some groups: {e}"),
            ),
            None => condition(
                "NamespaceDeletionDiscoveryFailure",
                false,
                "ResourcesDiscovered",
                "All resources successfully discovered".into(),
            ),
        },
        condition(
            "NamespaceDeletionGroupVersionParsingFailure",
            false,
            "ParsedGroupVersions",
            "All legacy kube types successfully parsed".into(),
        ),
        if r.content_errors.is_empty() {
            condition(
                "NamespaceDeletionContentFailure",
                false,
                "ContentDeleted",
                "All content successfully deleted, may be waiting on finalization".into(),
            )
        } else {
            condition(
                "NamespaceDeletionContentFailure",
                true,
                "ContentDeletionFailed",
                format!(
                    "Failed to delete all resource types, {} remaining: {}",
                    r.content_errors.len(),
                    r.content_errors.join(", ")
                ),
            )
        },
        if r.remaining.is_empty() {
            condition(
                "NamespaceContentRemaining",
                false,
                "ContentRemoved",
                "All content successfully removed".into(),
            )
        } else {
            condition(
                "NamespaceContentRemaining",
                true,
                "SomeResourcesRemain",
                format!("Some resources are remaining: {}", list(&r.remaining)),
            )
        },
        if r.finalizers.is_empty() {
            condition(
                "NamespaceFinalizersRemaining",
                false,
                "ContentHasNoFinalizers",
                "All content-preserving finalizers finished".into(),
            )
        } else {
            condition(
                "NamespaceFinalizersRemaining",
                true,
                "SomeFinalizersRemain",
                format!(
                    "Some content in the namespace has finalizers remaining: {}",
                    list(&r.finalizers).replace(" has ", " in ")
                ),
            )
        },
    ]
}

/// The status conditions to write: `want` merged into `current`, keeping the transition time
/// of conditions whose status did not change. `None` when nothing changes.
pub fn merge_conditions(current: &[Value], want: Vec<Value>, now: Timestamp) -> Option<Vec<Value>> {
    let mut changed = false;
    let mut out: Vec<Value> = current
        .iter()
        .filter(|c| !want.iter().any(|w| w["type"] == c["type"]))
        .cloned()
        .collect();
    for mut w in want {
        match current.iter().find(|c| c["type"] == w["type"]) {
            Some(c)
                if c["status"] == w["status"]
                    && c["reason"] == w["reason"]
                    && c["message"] == w["message"] =>
            {
                w = c.clone();
            }
            Some(c) if c["status"] == w["status"] => {
                changed = true;
                w["lastTransitionTime"] =
                    c.get("lastTransitionTime").cloned().unwrap_or_else(|| {
                        json!(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now))
                    });
            }
            _ => {
                changed = true;
                w["lastTransitionTime"] =
                    json!(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
            }
        }
        out.push(w);
    }
    changed.then_some(out)
}

fn resource_name(r: &ServedResource) -> String {
    if r.ar.group.is_empty() {
        r.ar.plural.clone()
    } else {
        format!("{}.{}", r.ar.plural, r.ar.group)
    }
}

struct NamespaceReconciler {
    client: Client,
    namespaces: Informer<Namespace>,
    recorder: EventRecorder,
}

impl NamespaceReconciler {
    /// Delete everything in `ns` once, and count what is left.
    async fn delete_content(&self, ns: &str) -> DeletionReport {
        let mut report = DeletionReport::default();
        let resources = match discover(&self.client).await {
            Ok(r) => r,
            Err(e) => {
                report.discovery_error = Some(e.to_string());
                return report;
            }
        };
        for r in resources.iter().filter(|r| {
            r.namespaced
                && r.supports(verbs::LIST)
                && (r.supports(verbs::DELETE) || r.supports(verbs::DELETE_COLLECTION))
        }) {
            let name = resource_name(r);
            let meta_api: Api<PartialObjectMeta<DynamicObject>> =
                Api::namespaced_with(self.client.clone(), ns, &r.ar);
            let items = match meta_api.list(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 405 => continue,
                Err(e) => {
                    report.content_errors.push(format!("{name}: {e}"));
                    continue;
                }
            };
            if items.is_empty() {
                continue;
            }
            let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &r.ar);
            let pending: Vec<_> = items
                .iter()
                .filter(|o| o.metadata.deletion_timestamp.is_none())
                .collect();
            if !pending.is_empty() {
                let res = if r.supports(verbs::DELETE_COLLECTION) {
                    api.delete_collection(&DeleteParams::background(), &ListParams::default())
                        .await
                        .map(|_| ())
                } else {
                    let mut res = Ok(());
                    for o in &pending {
                        match api
                            .delete(
                                o.metadata.name.as_deref().unwrap_or_default(),
                                &DeleteParams::background(),
                            )
                            .await
                        {
                            Ok(_) => {}
                            Err(kube::Error::Api(s)) if s.code == 404 => {}
                            Err(e) => res = Err(e),
                        }
                    }
                    res
                };
                if let Err(e) = res {
                    report.content_errors.push(format!("{name}: {e}"));
                }
            }
            // Count what is still there after this pass.
            let left = match meta_api.list(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(_) => items,
            };
            if !left.is_empty() {
                report.remaining.insert(name, left.len());
                for o in &left {
                    for f in o.metadata.finalizers.iter().flatten() {
                        *report.finalizers.entry(f.clone()).or_default() += 1;
                    }
                }
            }
        }
        report
    }

    async fn write_conditions(&self, ns: &Namespace, report: &DeletionReport) -> Result<()> {
        let current: Vec<Value> = ns
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|cs| {
                cs.iter()
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .collect()
            })
            .unwrap_or_default();
        let Some(conds) = merge_conditions(&current, conditions(report), Timestamp::now()) else {
            return Ok(());
        };
        let api: Api<Namespace> = Api::all(self.client.clone());
        let name = ns.metadata.name.as_deref().unwrap_or_default();
        match api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"conditions": conds}})),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn finalize(&self, ns: &Namespace) -> Result<()> {
        let name = ns.metadata.name.as_deref().unwrap_or_default();
        let rest: Vec<String> = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.clone())
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f != KUBERNETES_FINALIZER)
            .collect();
        let body = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name},
            "spec": {"finalizers": rest},
        });
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api
            .replace_subresource("finalize", name, &PostParams::default(), &body)
            .await
        {
            Ok(_) => {
                tracing::info!(namespace = name, "namespace content removed; finalized");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl Reconciler for NamespaceReconciler {
    async fn reconcile(&self, key: &ObjectKey, _ctx: &ReconcileContext) -> Result<Action> {
        let Some(ns) = self.namespaces.get(None, &key.name) else {
            return Ok(Action::done());
        };
        let ours = ns
            .spec
            .as_ref()
            .and_then(|s| s.finalizers.as_ref())
            .is_some_and(|f| f.iter().any(|f| f == KUBERNETES_FINALIZER));
        if ns.metadata.deletion_timestamp.is_none() || !ours {
            return Ok(Action::done());
        }
        let report = self.delete_content(&key.name).await;
        self.write_conditions(&ns, &report).await?;
        if report.done() {
            self.finalize(&ns).await?;
            return Ok(Action::done());
        }
        if let Some(e) = report
            .discovery_error
            .as_ref()
            .or(report.content_errors.first())
        {
            self.recorder.event(
                &*ns,
                EventType::Warning,
                "NamespaceDeletionFailed",
                format!("failed to delete namespace content: {e}"),
            );
            return Err(crate::framework::Error::msg(e.clone()));
        }
        tracing::debug!(namespace = %key.name, remaining = ?report.remaining, "namespace content still terminating");
        Ok(Action::requeue_after(CONTENT_RECHECK))
    }
}

/// Start the `namespace` controller.
pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    let namespaces = ctx.informers.informer::<Namespace>();
    let rec = Arc::new(NamespaceReconciler {
        client: ctx.client.clone(),
        namespaces: namespaces.clone(),
        recorder: ctx.recorder("namespace-controller"),
    });
    let controller = Controller::new("namespace", rec, ctx.metrics.clone());
    let q = controller.queue();
    namespaces.subscribe(move |c: &Change<Namespace>| {
        if !matches!(c, Change::Deleted(_)) && c.object().metadata.deletion_timestamp.is_some() {
            q.add(ObjectKey::of(&**c.object()));
        }
    });
    let synced = async move { namespaces.wait_synced().await };
    Ok(Box::pin(controller.run(
        ctx.config.concurrent_namespace_syncs,
        synced,
        ctx.token.clone(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_report_remaining_content_and_finalizers_as_upstream() {
        let mut r = DeletionReport::default();
        let c = conditions(&r);
        let by = |c: &[Value], t: &str| c.iter().find(|x| x["type"] == t).cloned().unwrap();
        assert_eq!(
            by(&c, "NamespaceContentRemaining")["reason"],
            "ContentRemoved"
        );
        assert_eq!(
            by(&c, "NamespaceDeletionDiscoveryFailure")["status"],
            "False"
        );
        r.remaining.insert("pods".into(), 2);
        r.finalizers.insert("example.com/keep".into(), 1);
        let c = conditions(&r);
        assert_eq!(
            by(&c, "NamespaceContentRemaining")["message"],
            "Some resources are remaining: pods has 2 resource instances"
        );
        assert_eq!(by(&c, "NamespaceFinalizersRemaining")["message"], "Some content in the namespace has finalizers remaining: example.com/keep in 1 resource instances");
        assert!(!r.done());
        r.discovery_error = Some("boom".into());
        assert_eq!(
            by(&conditions(&r), "NamespaceDeletionDiscoveryFailure")["status"],
            "True"
        );
    }

    #[test]
    fn condition_merge_keeps_transition_times_of_unchanged_statuses() {
        let t0 = Timestamp::from_second(1_000_000).unwrap();
        let t1 = Timestamp::from_second(2_000_000).unwrap();
        let first = merge_conditions(&[], conditions(&DeletionReport::default()), t0).unwrap();
        assert_eq!(first.len(), 5);
        assert_eq!(
            merge_conditions(&first, conditions(&DeletionReport::default()), t1),
            None
        );
        let mut r = DeletionReport::default();
        r.remaining.insert("pods".into(), 1);
        let second = merge_conditions(&first, conditions(&r), t1).unwrap();
        let remaining = second
            .iter()
            .find(|c| c["type"] == "NamespaceContentRemaining")
            .unwrap();
        let discovery = second
            .iter()
            .find(|c| c["type"] == "NamespaceDeletionDiscoveryFailure")
            .unwrap();
        assert_eq!(
            remaining["lastTransitionTime"],
            json!(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t1))
        );
        assert_eq!(
            discovery["lastTransitionTime"],
            json!(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t0))
        );
    }
}
