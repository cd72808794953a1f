//! Garbage collector (upstream `pkg/controller/garbagecollector`): deletes objects whose owners
//! are gone, and carries out foreground and orphan deletion of owners.
//!
//! Every served resource that can be listed, watched and deleted (found by discovery, re-run
//! every 30 s for new kinds; events are ignored as upstream) feeds an in-memory ownerReferences
//! graph ([`Graph`]): through the process's shared typed informer when another controller
//! already runs one for that kind (as upstream's GC uses the shared informers, so pods are
//! watched once), otherwise through a metadata-only watch of its own. Graph changes enqueue object UIDs into two
//! queues:
//! - *attempt to delete*: an object whose owners may all be gone. Before acting, the object and
//!   each owner are read live from the API server by UID (never from the graph alone); an object
//!   with a live owner keeps it, references to absent owners are removed (dangling references),
//!   and an object all of whose owners are absent is deleted (with a UID precondition) using its
//!   own pending propagation policy. An owner being deleted in the foreground
//!   (`foregroundDeletion` finalizer) gets its dependents deleted and keeps the finalizer until
//!   no dependent with `blockOwnerDeletion` remains.
//! - *attempt to orphan*: an owner deleted with the `orphan` finalizer has its reference removed
//!   from every dependent, then the finalizer removed.
//!
//! Owners that are referenced but not (yet) observed are "virtual" nodes; they are verified
//! with a live GET and, when absent, removed so that their dependents are collected.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    self as corev1, ConfigMap, Endpoints, Namespace, Pod, ReplicationController, Service,
    ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::core::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::discovery::{verbs, ApiCapabilities, Discovery, Scope};
use kube::runtime::watcher;
use kube::{Api, Client};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::framework::{
    Action, BoxFuture, Change, Controller, ControllerContext, Error, InformerFactory, InformerKind,
    ObjectKey, ReconcileContext, Reconciler, Result, WorkQueue,
};

/// Finalizer of owners deleted with `propagationPolicy=Foreground`.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// Finalizer of owners deleted with `propagationPolicy=Orphan`.
pub const ORPHAN_FINALIZER: &str = "orphan";
/// How often discovery is re-run to watch newly served kinds.
pub const REDISCOVERY_PERIOD: Duration = Duration::from_secs(30);
/// How long the workers wait for every resource's first list before starting anyway.
pub const GRAPH_SYNC_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Discovery, shared with the namespace controller.

/// A served resource: how to address it, whether it is namespaced, and its verbs.
#[derive(Clone, Debug)]
pub struct ServedResource {
    pub ar: ApiResource,
    pub namespaced: bool,
    pub caps: ApiCapabilities,
}

impl ServedResource {
    pub fn supports(&self, verb: &str) -> bool {
        self.caps.supports_operation(verb)
    }
}

/// Every served resource (preferred version of each group), or the discovery error.
pub async fn discover(client: &Client) -> std::result::Result<Vec<ServedResource>, kube::Error> {
    let d = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for g in d.groups() {
        for (ar, caps) in g.recommended_resources() {
            out.push(ServedResource {
                namespaced: caps.scope == Scope::Namespaced,
                ar,
                caps,
            });
        }
    }
    Ok(out)
}

fn is_ignored(ar: &ApiResource) -> bool {
    // Upstream `DefaultIgnoredResources`.
    ar.plural == "events" && (ar.group.is_empty() || ar.group == "events.k8s.io")
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
}

/// (group, kind) -> resource.
#[derive(Default)]
struct RestMapper {
    by_kind: HashMap<(String, String), ServedResource>,
}

impl RestMapper {
    fn add(&mut self, r: &ServedResource) {
        self.by_kind
            .entry((r.ar.group.clone(), r.ar.kind.clone()))
            .or_insert_with(|| r.clone());
    }

    fn resolve(&self, api_version: &str, kind: &str) -> Option<&ServedResource> {
        self.by_kind
            .get(&(group_of(api_version).to_string(), kind.to_string()))
    }
}

// ---------------------------------------------------------------------------------------------
// The graph.

/// Who an object is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub api_version: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
}

#[derive(Clone, Debug)]
pub struct Node {
    pub identity: Identity,
    pub owners: Vec<OwnerReference>,
    pub dependents: HashSet<String>,
    /// Referenced as an owner but not observed (yet).
    pub virtual_: bool,
    pub being_deleted: bool,
    pub deleting_dependents: bool,
}

/// What a graph change asks the workers to look at.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Enqueue {
    pub delete: Vec<String>,
    pub orphan: Vec<String>,
}

fn has_finalizer(meta: &ObjectMeta, f: &str) -> bool {
    meta.finalizers.iter().flatten().any(|x| x == f)
}

/// The ownerReferences graph, keyed by UID.
#[derive(Default, Debug)]
pub struct Graph {
    nodes: HashMap<String, Node>,
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The identity an owner reference of `dependent` points at (the dependent's namespace for
    /// namespaced owners).
    fn owner_identity(
        r: &OwnerReference,
        dependent: &Identity,
        owner_namespaced: bool,
    ) -> Identity {
        Identity {
            api_version: r.api_version.clone(),
            kind: r.kind.clone(),
            namespace: if owner_namespaced {
                dependent.namespace.clone()
            } else {
                None
            },
            name: r.name.clone(),
            uid: r.uid.clone(),
        }
    }

    fn link(
        &mut self,
        dependent: &Identity,
        r: &OwnerReference,
        owner_namespaced: bool,
        out: &mut Enqueue,
    ) {
        match self.nodes.get_mut(&r.uid) {
            Some(owner) => {
                owner.dependents.insert(dependent.uid.clone());
            }
            None => {
                let node = Node {
                    identity: Self::owner_identity(r, dependent, owner_namespaced),
                    owners: Vec::new(),
                    dependents: HashSet::from([dependent.uid.clone()]),
                    virtual_: true,
                    being_deleted: false,
                    deleting_dependents: false,
                };
                self.nodes.insert(r.uid.clone(), node);
                out.delete.push(r.uid.clone());
            }
        }
    }

    fn unlink(&mut self, dependent_uid: &str, owner_uid: &str, out: &mut Enqueue) {
        if let Some(owner) = self.nodes.get_mut(owner_uid) {
            owner.dependents.remove(dependent_uid);
            if owner.deleting_dependents {
                out.delete.push(owner_uid.to_string());
            }
        }
    }

    /// An object was added or updated. `namespaced` says whether an owner kind is namespaced.
    pub fn upsert(
        &mut self,
        identity: Identity,
        meta: &ObjectMeta,
        namespaced: impl Fn(&OwnerReference) -> bool,
    ) -> Enqueue {
        let mut out = Enqueue::default();
        let uid = identity.uid.clone();
        let owners: Vec<OwnerReference> = meta.owner_references.clone().unwrap_or_default();
        let being_deleted = meta.deletion_timestamp.is_some();
        let deleting_dependents = being_deleted && has_finalizer(meta, FOREGROUND_FINALIZER);
        let old_owners = match self.nodes.get_mut(&uid) {
            Some(n) => {
                let was_virtual = n.virtual_;
                n.virtual_ = false;
                n.identity = identity.clone();
                if was_virtual {
                    Vec::new()
                } else {
                    std::mem::take(&mut n.owners)
                }
            }
            None => {
                self.nodes.insert(
                    uid.clone(),
                    Node {
                        identity: identity.clone(),
                        owners: Vec::new(),
                        dependents: HashSet::new(),
                        virtual_: false,
                        being_deleted: false,
                        deleting_dependents: false,
                    },
                );
                Vec::new()
            }
        };
        for r in &owners {
            match old_owners.iter().find(|o| o.uid == r.uid) {
                None => self.link(&identity, r, namespaced(r), &mut out),
                Some(o) => {
                    // No longer blocking an owner that waits for its blocking dependents.
                    if o.block_owner_deletion == Some(true) && r.block_owner_deletion != Some(true)
                    {
                        self.unlink_notify_only(&o.uid, &mut out);
                    }
                }
            }
        }
        for o in &old_owners {
            if !owners.iter().any(|r| r.uid == o.uid) {
                self.unlink(&uid, &o.uid, &mut out);
            }
        }
        let node = self.nodes.get_mut(&uid).expect("inserted above");
        node.owners = owners;
        let started_foreground = deleting_dependents && !node.deleting_dependents;
        node.being_deleted = being_deleted;
        node.deleting_dependents = deleting_dependents;
        if being_deleted && has_finalizer(meta, ORPHAN_FINALIZER) {
            out.orphan.push(uid.clone());
        }
        if deleting_dependents {
            if started_foreground {
                out.delete.extend(node.dependents.iter().cloned());
            }
            out.delete.push(uid);
        }
        out
    }

    fn unlink_notify_only(&mut self, owner_uid: &str, out: &mut Enqueue) {
        if self
            .nodes
            .get(owner_uid)
            .is_some_and(|o| o.deleting_dependents)
        {
            out.delete.push(owner_uid.to_string());
        }
    }

    /// An object is gone (observed deletion, or a live GET found it absent).
    pub fn remove(&mut self, uid: &str) -> Enqueue {
        let mut out = Enqueue::default();
        let Some(node) = self.nodes.remove(uid) else {
            return out;
        };
        for o in &node.owners {
            self.unlink(uid, &o.uid, &mut out);
            // Drop virtual owners nobody references any more.
            if self
                .nodes
                .get(&o.uid)
                .is_some_and(|n| n.virtual_ && n.dependents.is_empty())
            {
                self.nodes.remove(&o.uid);
            }
        }
        out.delete.extend(node.dependents.iter().cloned());
        out
    }

    /// The dependents of `uid` whose reference to it has `blockOwnerDeletion: true`.
    pub fn blocking_dependents(&self, uid: &str) -> Vec<&Node> {
        let Some(n) = self.nodes.get(uid) else {
            return Vec::new();
        };
        n.dependents
            .iter()
            .filter_map(|d| self.nodes.get(d))
            .filter(|d| {
                !d.virtual_
                    && d.owners
                        .iter()
                        .any(|r| r.uid == uid && r.block_owner_deletion == Some(true))
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Deciding about one object (pure).

/// How an owner reference resolved against the live API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists and is not deleting its dependents.
    Solid,
    /// The owner does not exist (or has another UID).
    Dangling,
    /// The owner exists and is being deleted in the foreground.
    WaitingForDependents,
}

/// What to do with a dependent, given its owners' states (upstream `attemptToDeleteItem`).
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    Keep,
    /// Keep, but drop the references to these owner UIDs.
    RemoveReferences(Vec<String>),
    /// Delete with this propagation policy (`unblock`: first clear blockOwnerDeletion on these
    /// owner UIDs, to break a foreground deletion cycle).
    Delete {
        policy: PropagationPolicy,
        unblock: Vec<String>,
    },
}

pub fn decide(
    meta: &ObjectMeta,
    states: &[(String, OwnerState)],
    has_dependents: bool,
    dependent_deleting_dependents: bool,
) -> Decision {
    if states.is_empty() {
        return Decision::Keep;
    }
    let of = |s: OwnerState| {
        states
            .iter()
            .filter(|(_, st)| *st == s)
            .map(|(u, _)| u.clone())
            .collect::<Vec<_>>()
    };
    let (solid, dangling, waiting) = (
        of(OwnerState::Solid),
        of(OwnerState::Dangling),
        of(OwnerState::WaitingForDependents),
    );
    if !solid.is_empty() {
        let mut drop = dangling;
        drop.extend(waiting);
        return if drop.is_empty() {
            Decision::Keep
        } else {
            Decision::RemoveReferences(drop)
        };
    }
    if !waiting.is_empty() && has_dependents {
        let unblock = if dependent_deleting_dependents {
            waiting
        } else {
            Vec::new()
        };
        return Decision::Delete {
            policy: PropagationPolicy::Foreground,
            unblock,
        };
    }
    let policy = if has_finalizer(meta, ORPHAN_FINALIZER) {
        PropagationPolicy::Orphan
    } else if has_finalizer(meta, FOREGROUND_FINALIZER) {
        PropagationPolicy::Foreground
    } else {
        PropagationPolicy::Background
    };
    Decision::Delete {
        policy,
        unblock: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// The collector.

struct Shared {
    client: Client,
    informers: InformerFactory,
    graph: Mutex<Graph>,
    mapper: Mutex<RestMapper>,
    /// Owner UIDs recently found absent (upstream `absentOwnerCache`).
    absent: Mutex<HashSet<String>>,
    delete_q: WorkQueue<ObjectKey>,
    orphan_q: WorkQueue<ObjectKey>,
}

impl Shared {
    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dispatch(&self, e: Enqueue) {
        for uid in e.delete {
            self.delete_q.add(ObjectKey::cluster(&uid));
        }
        for uid in e.orphan {
            self.orphan_q.add(ObjectKey::cluster(&uid));
        }
    }

    fn resolve(&self, api_version: &str, kind: &str) -> Option<ServedResource> {
        self.mapper
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .resolve(api_version, kind)
            .cloned()
    }

    fn owner_namespaced(&self, r: &OwnerReference) -> bool {
        self.resolve(&r.api_version, &r.kind)
            .is_none_or(|s| s.namespaced)
    }

    fn api(&self, id: &Identity) -> Option<Api<DynamicObject>> {
        let r = self.resolve(&id.api_version, &id.kind)?;
        Some(match (&id.namespace, r.namespaced) {
            (Some(ns), true) => Api::namespaced_with(self.client.clone(), ns, &r.ar),
            (None, false) => Api::all_with(self.client.clone(), &r.ar),
            // A namespaced owner of a cluster-scoped object is invalid: never found.
            _ => return None,
        })
    }

    /// The live object by identity: `Ok(None)` when absent or replaced (another UID).
    async fn live(&self, id: &Identity) -> Result<Option<ObjectMeta>> {
        let Some(api) = self.api(id) else {
            return Ok(None);
        };
        match api.get_metadata_opt(&id.name).await? {
            Some(m) if m.metadata.uid.as_deref() == Some(id.uid.as_str()) => Ok(Some(m.metadata)),
            _ => Ok(None),
        }
    }

    fn mark_absent(&self, uid: &str) {
        let mut a = self.absent.lock().unwrap_or_else(|e| e.into_inner());
        if a.len() > 10_000 {
            a.clear();
        }
        a.insert(uid.to_string());
    }

    fn forget_node(&self, uid: &str) {
        let e = self.graph().remove(uid);
        self.dispatch(e);
    }

    async fn owner_state(&self, dependent: &Identity, r: &OwnerReference) -> Result<OwnerState> {
        if self
            .absent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&r.uid)
        {
            return Ok(OwnerState::Dangling);
        }
        if self.resolve(&r.api_version, &r.kind).is_none() {
            // Unknown kind: never delete on uncertainty; retry with backoff.
            return Err(Error::msg(format!(
                "cannot resolve owner kind {} {}",
                r.api_version, r.kind
            )));
        }
        let id = Graph::owner_identity(r, dependent, self.owner_namespaced(r));
        Ok(match self.live(&id).await? {
            None => {
                self.mark_absent(&r.uid);
                OwnerState::Dangling
            }
            Some(m)
                if m.deletion_timestamp.is_some() && has_finalizer(&m, FOREGROUND_FINALIZER) =>
            {
                OwnerState::WaitingForDependents
            }
            Some(_) => OwnerState::Solid,
        })
    }

    async fn patch_meta(&self, id: &Identity, patch: Value) -> Result<()> {
        let Some(api) = self.api(id) else {
            return Ok(());
        };
        match api
            .patch(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Rewrite `id`'s owner references with `f` (read-modify-write, resourceVersion-guarded).
    async fn edit_owner_refs(
        &self,
        id: &Identity,
        f: impl Fn(&mut Vec<OwnerReference>),
    ) -> Result<()> {
        let Some(meta) = self.live(id).await? else {
            return Ok(());
        };
        let mut refs = meta.owner_references.clone().unwrap_or_default();
        let before = refs.clone();
        f(&mut refs);
        if refs == before {
            return Ok(());
        }
        let refs = if refs.is_empty() {
            Value::Null
        } else {
            serde_json::to_value(&refs).unwrap_or(Value::Null)
        };
        self.patch_meta(id, json!({"metadata": {"ownerReferences": refs, "resourceVersion": meta.resource_version, "uid": id.uid}})).await
    }

    async fn remove_finalizer(&self, id: &Identity, finalizer: &str) -> Result<()> {
        let Some(meta) = self.live(id).await? else {
            return Ok(());
        };
        if !has_finalizer(&meta, finalizer) {
            return Ok(());
        }
        let rest: Vec<&String> = meta
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != finalizer)
            .collect();
        let rest = if rest.is_empty() {
            Value::Null
        } else {
            json!(rest)
        };
        tracing::info!(kind = %id.kind, name = %id.name, namespace = ?id.namespace, finalizer, "removing finalizer");
        self.patch_meta(id, json!({"metadata": {"finalizers": rest, "resourceVersion": meta.resource_version, "uid": id.uid}})).await
    }

    async fn delete_object(&self, id: &Identity, policy: PropagationPolicy) -> Result<()> {
        let Some(api) = self.api(id) else {
            return Ok(());
        };
        let dp = DeleteParams {
            propagation_policy: Some(policy.clone()),
            preconditions: Some(Preconditions {
                uid: Some(id.uid.clone()),
                resource_version: None,
            }),
            ..Default::default()
        };
        tracing::info!(kind = %id.kind, name = %id.name, namespace = ?id.namespace, ?policy, "deleting object whose owners are gone");
        match api.delete(&id.name, &dp).await {
            Ok(_) => Ok(()),
            // Gone, or replaced by another object of the same name.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Upstream `attemptToDeleteItem`.
    async fn attempt_to_delete(&self, uid: &str) -> Result<()> {
        let Some(node) = self.graph().get(uid).cloned() else {
            return Ok(());
        };
        let Some(latest) = self.live(&node.identity).await? else {
            // Absent: a virtual owner that never existed, or a delete event we missed.
            self.mark_absent(uid);
            self.forget_node(uid);
            return Ok(());
        };
        if node.virtual_ {
            // It exists; its watch will make it real.
            return Ok(());
        }
        if latest.deletion_timestamp.is_some() {
            if has_finalizer(&latest, FOREGROUND_FINALIZER) {
                return self.process_deleting_dependents(&node).await;
            }
            return Ok(());
        }
        let refs = latest.owner_references.clone().unwrap_or_default();
        let mut states = Vec::with_capacity(refs.len());
        for r in &refs {
            states.push((r.uid.clone(), self.owner_state(&node.identity, r).await?));
        }
        let (has_dependents, dependent_deleting) = {
            let g = self.graph();
            let deps: Vec<&Node> = node.dependents.iter().filter_map(|d| g.get(d)).collect();
            (!deps.is_empty(), deps.iter().any(|d| d.deleting_dependents))
        };
        match decide(&latest, &states, has_dependents, dependent_deleting) {
            Decision::Keep => Ok(()),
            Decision::RemoveReferences(uids) => {
                tracing::info!(kind = %node.identity.kind, name = %node.identity.name, namespace = ?node.identity.namespace, owners = ?uids, "removing dangling owner references");
                self.edit_owner_refs(&node.identity, |refs| {
                    refs.retain(|r| !uids.contains(&r.uid))
                })
                .await
            }
            Decision::Delete { policy, unblock } => {
                if !unblock.is_empty() {
                    self.edit_owner_refs(&node.identity, |refs| {
                        for r in refs.iter_mut().filter(|r| unblock.contains(&r.uid)) {
                            r.block_owner_deletion = Some(false);
                        }
                    })
                    .await?;
                }
                self.delete_object(&node.identity, policy).await
            }
        }
    }

    /// An owner in foreground deletion: delete its dependents, then drop the finalizer once no
    /// blocking dependent is left.
    async fn process_deleting_dependents(&self, node: &Node) -> Result<()> {
        let (blocking, all): (Vec<(String, bool)>, Vec<String>) = {
            let g = self.graph();
            let blocking = g
                .blocking_dependents(&node.identity.uid)
                .into_iter()
                .map(|d| (d.identity.uid.clone(), d.being_deleted))
                .collect();
            (blocking, node.dependents.iter().cloned().collect())
        };
        if blocking.is_empty() {
            return self
                .remove_finalizer(&node.identity, FOREGROUND_FINALIZER)
                .await;
        }
        for d in all {
            self.delete_q.add(ObjectKey::cluster(&d));
        }
        Ok(())
    }

    /// Upstream `attemptToOrphanWorker`.
    async fn attempt_to_orphan(&self, uid: &str) -> Result<()> {
        let Some(node) = self.graph().get(uid).cloned() else {
            return Ok(());
        };
        let Some(latest) = self.live(&node.identity).await? else {
            return Ok(());
        };
        if latest.deletion_timestamp.is_none() || !has_finalizer(&latest, ORPHAN_FINALIZER) {
            return Ok(());
        }
        let dependents: Vec<Identity> = {
            let g = self.graph();
            node.dependents
                .iter()
                .filter_map(|d| g.get(d))
                .filter(|d| !d.virtual_)
                .map(|d| d.identity.clone())
                .collect()
        };
        for d in &dependents {
            self.edit_owner_refs(d, |refs| refs.retain(|r| r.uid != uid))
                .await?;
        }
        self.remove_finalizer(&node.identity, ORPHAN_FINALIZER)
            .await
    }

    // --------------------------------------------------------------- monitors

    fn observe(&self, r: &ServedResource, meta: &ObjectMeta) -> Option<String> {
        let uid = meta.uid.clone()?;
        let identity = Identity {
            api_version: r.ar.api_version.clone(),
            kind: r.ar.kind.clone(),
            namespace: meta.namespace.clone().filter(|_| r.namespaced),
            name: meta.name.clone().unwrap_or_default(),
            uid: uid.clone(),
        };
        let e = {
            let mapper = self.mapper.lock().unwrap_or_else(|e| e.into_inner());
            let namespaced = |o: &OwnerReference| {
                mapper
                    .resolve(&o.api_version, &o.kind)
                    .is_none_or(|s| s.namespaced)
            };
            self.graph().upsert(identity, meta, namespaced)
        };
        self.dispatch(e);
        Some(uid)
    }

    /// Feed the graph from the shared typed informer of `r` when one is running (returns
    /// whether it did); `synced` gets a message once that informer has listed.
    fn use_shared_informer(
        self: &Arc<Self>,
        r: &ServedResource,
        synced: &tokio::sync::mpsc::UnboundedSender<()>,
        token: &CancellationToken,
    ) -> bool {
        if r.ar.version != "v1" {
            return false;
        }
        type Feed = fn(
            &Arc<Shared>,
            &ServedResource,
            &tokio::sync::mpsc::UnboundedSender<()>,
            &CancellationToken,
        ) -> bool;
        let feed: Feed = match (r.ar.group.as_str(), r.ar.plural.as_str()) {
            ("", "pods") => Self::feed_from::<Pod>,
            ("", "replicationcontrollers") => Self::feed_from::<ReplicationController>,
            ("", "services") => Self::feed_from::<Service>,
            ("", "endpoints") => Self::feed_from::<Endpoints>,
            ("", "namespaces") => Self::feed_from::<Namespace>,
            ("", "nodes") => Self::feed_from::<corev1::Node>,
            ("", "configmaps") => Self::feed_from::<ConfigMap>,
            ("", "serviceaccounts") => Self::feed_from::<ServiceAccount>,
            ("apps", "replicasets") => Self::feed_from::<ReplicaSet>,
            ("apps", "deployments") => Self::feed_from::<Deployment>,
            ("discovery.k8s.io", "endpointslices") => Self::feed_from::<EndpointSlice>,
            ("coordination.k8s.io", "leases") => Self::feed_from::<Lease>,
            _ => return false,
        };
        feed(self, r, synced, token)
    }

    fn feed_from<K: InformerKind>(
        self: &Arc<Self>,
        r: &ServedResource,
        synced: &tokio::sync::mpsc::UnboundedSender<()>,
        token: &CancellationToken,
    ) -> bool {
        let Some(informer) = self.informers.existing::<K>() else {
            return false;
        };
        // Weak: the informer outlives nothing here, but a strong reference would make a cycle
        // (factory -> informer -> handler -> collector -> factory).
        let (me, r) = (Arc::downgrade(self), r.clone());
        informer.subscribe(move |c: &Change<K>| {
            let Some(me) = me.upgrade() else { return };
            match c {
                Change::Deleted(o) => {
                    if let Some(uid) = o.meta().uid.as_deref() {
                        me.forget_node(uid);
                    }
                }
                Change::Added(o) | Change::Updated { new: o, .. } => {
                    me.observe(&r, o.meta());
                }
            }
        });
        let (synced, token) = (synced.clone(), token.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = informer.wait_synced() => { let _ = synced.send(()); }
            }
        });
        true
    }

    /// Watch one resource's metadata into the graph until `token` is cancelled.
    async fn monitor(
        self: Arc<Self>,
        r: ServedResource,
        synced: tokio::sync::mpsc::UnboundedSender<()>,
        token: CancellationToken,
    ) {
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(self.client.clone(), &r.ar);
        let stream = kube::runtime::WatchStreamExt::default_backoff(watcher(
            api,
            watcher::Config::default(),
        ));
        futures::pin_mut!(stream);
        // UIDs this monitor has put in the graph, to diff re-lists.
        let mut known: HashSet<String> = HashSet::new();
        let mut relist: HashSet<String> = HashSet::new();
        let mut first_sync = Some(synced);
        loop {
            let ev = tokio::select! {
                _ = token.cancelled() => return,
                ev = stream.next() => match ev { Some(ev) => ev, None => return },
            };
            match ev {
                Ok(watcher::Event::Apply(o)) => {
                    if let Some(uid) = self.observe(&r, &o.metadata) {
                        known.insert(uid);
                    }
                }
                Ok(watcher::Event::Delete(o)) => {
                    if let Some(uid) = o.metadata.uid.as_deref() {
                        known.remove(uid);
                        self.forget_node(uid);
                    }
                }
                Ok(watcher::Event::Init) => relist.clear(),
                Ok(watcher::Event::InitApply(o)) => {
                    if let Some(uid) = self.observe(&r, &o.metadata) {
                        relist.insert(uid);
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    for gone in known.difference(&relist).cloned().collect::<Vec<_>>() {
                        self.forget_node(&gone);
                    }
                    known = std::mem::take(&mut relist);
                    if let Some(tx) = first_sync.take() {
                        let _ = tx.send(());
                    }
                }
                Err(e) => {
                    tracing::debug!(resource = %r.ar.plural, group = %r.ar.group, error = %e, "gc watch failed; retrying")
                }
            }
        }
    }
}

/// The resources the collector watches.
fn collectable(resources: &[ServedResource]) -> Vec<ServedResource> {
    resources
        .iter()
        .filter(|r| {
            r.supports(verbs::LIST)
                && r.supports(verbs::WATCH)
                && r.supports(verbs::DELETE)
                && !is_ignored(&r.ar)
        })
        .cloned()
        .collect()
}

/// Discover, start monitors for resources not watched yet; returns how many were started.
async fn sync_monitors(
    shared: &Arc<Shared>,
    started: &mut HashSet<(String, String)>,
    synced: &tokio::sync::mpsc::UnboundedSender<()>,
    token: &CancellationToken,
) -> std::result::Result<usize, kube::Error> {
    let resources = discover(&shared.client).await?;
    {
        let mut m = shared.mapper.lock().unwrap_or_else(|e| e.into_inner());
        for r in &resources {
            m.add(r);
        }
    }
    let mut n = 0;
    for r in collectable(&resources) {
        if started.insert((r.ar.group.clone(), r.ar.plural.clone())) {
            if !shared.use_shared_informer(&r, synced, token) {
                tokio::spawn(shared.clone().monitor(r, synced.clone(), token.clone()));
            }
            n += 1;
        }
    }
    Ok(n)
}

type SharedCell = Arc<std::sync::OnceLock<Arc<Shared>>>;

struct DeleteWorker(SharedCell);
struct OrphanWorker(SharedCell);

fn shared(cell: &SharedCell) -> Result<&Arc<Shared>> {
    cell.get()
        .ok_or_else(|| Error::msg("garbage collector not initialised"))
}

impl Reconciler for DeleteWorker {
    async fn reconcile(&self, key: &ObjectKey, _ctx: &ReconcileContext) -> Result<Action> {
        shared(&self.0)?
            .attempt_to_delete(&key.name)
            .await
            .map(|()| Action::done())
    }
}

impl Reconciler for OrphanWorker {
    async fn reconcile(&self, key: &ObjectKey, _ctx: &ReconcileContext) -> Result<Action> {
        shared(&self.0)?
            .attempt_to_orphan(&key.name)
            .await
            .map(|()| Action::done())
    }
}

/// Start the `garbagecollector` controller.
pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    let cell: SharedCell = Arc::default();
    let delete_ctrl = Controller::new(
        "garbagecollector",
        Arc::new(DeleteWorker(cell.clone())),
        ctx.metrics.clone(),
    );
    let orphan_ctrl = Controller::new(
        "garbagecollector-orphan",
        Arc::new(OrphanWorker(cell.clone())),
        ctx.metrics.clone(),
    );
    let shared = Arc::new(Shared {
        client: ctx.client.clone(),
        informers: ctx.informers.clone(),
        graph: Mutex::default(),
        mapper: Mutex::default(),
        absent: Mutex::default(),
        delete_q: delete_ctrl.queue(),
        orphan_q: orphan_ctrl.queue(),
    });
    let _ = cell.set(shared.clone());
    let token = ctx.token.clone();
    let workers = ctx.config.concurrent_gc_syncs;
    Ok(Box::pin(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut started = HashSet::new();
        let n = loop {
            match sync_monitors(&shared, &mut started, &tx, &token).await {
                Ok(n) => break n,
                Err(e) => {
                    tracing::warn!(error = %e, "garbage collector discovery failed; retrying");
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
            }
        };
        tracing::info!(resources = n, "garbage collector watching resources");
        let (synced_tx, synced_rx) = tokio::sync::watch::channel(false);
        let s2 = shared.clone();
        tokio::spawn(async move {
            let all = async {
                for _ in 0..n {
                    if rx.recv().await.is_none() {
                        return;
                    }
                }
            };
            // A resource that never lists must not stop collection for good; starting on a
            // partial graph is safe because every deletion is verified with live reads.
            match tokio::time::timeout(GRAPH_SYNC_TIMEOUT, all).await {
                Ok(()) => {
                    tracing::info!(nodes = s2.graph().len(), "garbage collector graph synced")
                }
                Err(_) => tracing::warn!(
                    nodes = s2.graph().len(),
                    "garbage collector graph not fully synced; starting anyway"
                ),
            }
            synced_tx.send_replace(true);
        });
        {
            let (shared, token) = (shared.clone(), token.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = token.cancelled() => return,
                        _ = tokio::time::sleep(REDISCOVERY_PERIOD) => {}
                    }
                    match sync_monitors(&shared, &mut started, &tx, &token).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(
                            resources = n,
                            "garbage collector watching newly served resources"
                        ),
                        Err(e) => {
                            tracing::debug!(error = %e, "garbage collector rediscovery failed")
                        }
                    }
                }
            });
        }
        let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        futures::join!(
            delete_ctrl.run(workers, wait(synced_rx.clone()), token.clone()),
            orphan_ctrl.run(workers, wait(synced_rx), token.clone())
        );
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn id(kind: &str, name: &str, uid: &str) -> Identity {
        Identity {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            namespace: Some("ns".into()),
            name: name.into(),
            uid: uid.into(),
        }
    }

    fn oref(kind: &str, name: &str, uid: &str, block: bool) -> OwnerReference {
        OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: name.into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(block),
        }
    }

    fn meta(owners: Vec<OwnerReference>, deleting: bool, finalizers: &[&str]) -> ObjectMeta {
        ObjectMeta {
            owner_references: (!owners.is_empty()).then_some(owners),
            deletion_timestamp: deleting.then(|| Time(k8s_openapi::jiff::Timestamp::now())),
            finalizers: (!finalizers.is_empty())
                .then(|| finalizers.iter().map(|f| f.to_string()).collect()),
            ..Default::default()
        }
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn graph_links_owners_creates_virtual_owners_and_requeues_dependents_on_delete() {
        let mut g = Graph::default();
        // A pod observed before its ReplicaSet: the owner is virtual and verified.
        let e = g.upsert(
            id("Pod", "p", "pod-1"),
            &meta(vec![oref("ReplicaSet", "rs", "rs-1", true)], false, &[]),
            |_| true,
        );
        assert_eq!(e.delete, ["rs-1"]);
        assert!(g.get("rs-1").unwrap().virtual_);
        // The ReplicaSet arrives: real, nothing to do.
        let e = g.upsert(
            id("ReplicaSet", "rs", "rs-1"),
            &meta(vec![], false, &[]),
            |_| true,
        );
        assert_eq!(e, Enqueue::default());
        assert!(!g.get("rs-1").unwrap().virtual_);
        assert!(g.get("rs-1").unwrap().dependents.contains("pod-1"));
        // Deleting the owner queues its dependents.
        let e = g.remove("rs-1");
        assert_eq!(e.delete, ["pod-1"]);
        // The pod's removal is clean.
        assert_eq!(g.remove("pod-1"), Enqueue::default());
        assert!(g.is_empty());
    }

    #[test]
    fn foreground_and_orphan_finalizers_queue_the_right_work() {
        let mut g = Graph::default();
        g.upsert(
            id("ReplicaSet", "rs", "rs-1"),
            &meta(vec![], false, &[]),
            |_| true,
        );
        g.upsert(
            id("Pod", "a", "pod-a"),
            &meta(vec![oref("ReplicaSet", "rs", "rs-1", true)], false, &[]),
            |_| true,
        );
        g.upsert(
            id("Pod", "b", "pod-b"),
            &meta(vec![oref("ReplicaSet", "rs", "rs-1", false)], false, &[]),
            |_| true,
        );
        let e = g.upsert(
            id("ReplicaSet", "rs", "rs-1"),
            &meta(vec![], true, &[FOREGROUND_FINALIZER]),
            |_| true,
        );
        assert_eq!(sorted(e.delete), ["pod-a", "pod-b", "rs-1"]);
        assert_eq!(
            g.blocking_dependents("rs-1")
                .iter()
                .map(|n| n.identity.name.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
        // A blocking dependent going away queues the waiting owner.
        let e = g.remove("pod-a");
        assert_eq!(e.delete, ["rs-1"]);
        assert!(g.blocking_dependents("rs-1").is_empty());
        let e = g.upsert(
            id("ReplicaSet", "rs", "rs-1"),
            &meta(vec![], true, &[ORPHAN_FINALIZER]),
            |_| true,
        );
        assert_eq!(e.orphan, ["rs-1"]);
    }

    #[test]
    fn owner_reference_changes_relink() {
        let mut g = Graph::default();
        g.upsert(
            id("ReplicaSet", "a", "rs-a"),
            &meta(vec![], true, &[FOREGROUND_FINALIZER]),
            |_| true,
        );
        g.upsert(
            id("Pod", "p", "pod"),
            &meta(vec![oref("ReplicaSet", "a", "rs-a", true)], false, &[]),
            |_| true,
        );
        // Released by rs-a: the waiting owner is told.
        let e = g.upsert(id("Pod", "p", "pod"), &meta(vec![], false, &[]), |_| true);
        assert_eq!(e.delete, ["rs-a"]);
        assert!(g.get("rs-a").unwrap().dependents.is_empty());
    }

    #[test]
    fn decisions_follow_upstream() {
        use OwnerState::*;
        let m = meta(vec![], false, &[]);
        let s = |v: &[(&str, OwnerState)]| {
            v.iter()
                .map(|(u, st)| (u.to_string(), *st))
                .collect::<Vec<_>>()
        };
        let bg = Decision::Delete {
            policy: PropagationPolicy::Background,
            unblock: vec![],
        };
        type Case = (&'static str, Vec<(String, OwnerState)>, bool, Decision);
        let cases: Vec<Case> = vec![
            ("no owners", s(&[]), false, Decision::Keep),
            ("live owner", s(&[("a", Solid)]), false, Decision::Keep),
            (
                "one live, one dangling",
                s(&[("a", Solid), ("b", Dangling)]),
                false,
                Decision::RemoveReferences(vec!["b".into()]),
            ),
            (
                "live and waiting",
                s(&[("a", Solid), ("b", WaitingForDependents)]),
                false,
                Decision::RemoveReferences(vec!["b".into()]),
            ),
            (
                "all dangling",
                s(&[("a", Dangling), ("b", Dangling)]),
                true,
                bg.clone(),
            ),
            (
                "waiting, leaf",
                s(&[("a", WaitingForDependents)]),
                false,
                bg,
            ),
            (
                "waiting, with dependents",
                s(&[("a", WaitingForDependents)]),
                true,
                Decision::Delete {
                    policy: PropagationPolicy::Foreground,
                    unblock: vec![],
                },
            ),
        ];
        for (name, states, deps, want) in cases {
            assert_eq!(decide(&m, &states, deps, false), want, "{name}");
        }
        let orphaning = meta(vec![], false, &[ORPHAN_FINALIZER]);
        assert_eq!(
            decide(&orphaning, &s(&[("a", Dangling)]), false, false),
            Decision::Delete {
                policy: PropagationPolicy::Orphan,
                unblock: vec![]
            }
        );
        assert_eq!(
            decide(&m, &s(&[("a", WaitingForDependents)]), true, true),
            Decision::Delete {
                policy: PropagationPolicy::Foreground,
                unblock: vec!["a".into()]
            }
        );
    }

    #[test]
    fn owner_api_versions_resolve_by_group() {
        assert_eq!(group_of("apps/v1"), "apps");
        assert_eq!(group_of("v1"), "");
        assert!(is_ignored(&ApiResource {
            group: "".into(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: "Event".into(),
            plural: "events".into()
        }));
    }
}
