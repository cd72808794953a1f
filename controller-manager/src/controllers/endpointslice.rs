//! EndpointSlice and EndpointSlice mirroring controllers (upstream `pkg/controller/endpointslice`
//! and `pkg/controller/endpointslicemirroring`).
//!
//! For every Service with a selector the `endpointslice` controller keeps EndpointSlices labelled
//! `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by:
//! endpointslice-controller.k8s.io`, owned by the Service, holding one endpoint per matching pod
//! (conditions ready/serving/terminating, hostname, nodeName, targetRef), grouped by port set
//! and address type, at most [`MAX_ENDPOINTS_PER_SLICE`] per slice. For selector-less Services
//! the `endpointslicemirroring` controller mirrors the hand-written Endpoints into slices managed
//! by `endpointslicemirroring-controller.k8s.io`.
//!
//! Both compute the desired endpoints purely and plan the writes with [`plan_slices`], which keeps
//! endpoints in the slice they already sit in (so a pod change touches one slice), fills free
//! room before creating slices, and keeps one empty placeholder slice for a Service without
//! endpoints, as upstream. A per-Service tracker holds back the next sync until the informer has
//! seen this controller's own writes, so a slow watch never makes it create duplicate slices.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

use super::endpoints::{
    address_type, enqueue_services_for_pod, find_port, is_pod_ready, managed_selector,
    pod_hostname_for, pod_ip_for, pod_reference, publish_not_ready, selector_matches,
    service_labels, should_pod_be_in_endpoints,
};
use crate::framework::{
    new_controller_ref, Action, BoxFuture, Change, Controller, ControllerContext, EventRecorder,
    EventType, Informer, ObjectKey, ReconcileContext, Reconciler, Result,
};

/// Label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller that manages a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// This controller's `managed-by` value.
pub const CONTROLLER_NAME: &str = "endpointslice-controller.k8s.io";
/// The mirroring controller's `managed-by` value.
pub const MIRRORING_CONTROLLER_NAME: &str = "endpointslicemirroring-controller.k8s.io";
/// Endpoints labelled with this (`"true"`) are not mirrored.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// Upstream `--max-endpoints-per-slice` default.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// Most endpoints mirrored from one Endpoints object (upstream `maxEndpointsPerSubset`-style cap).
pub const MAX_MIRRORED_ENDPOINTS: usize = 1000;

/// Endpoints that share one port set and address type: one group of slices.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointGroup {
    pub address_type: String,
    pub ports: Vec<EndpointPort>,
    /// Keyed by the endpoint's identity (first address and target UID).
    pub endpoints: BTreeMap<String, Endpoint>,
}

fn ports_key(ports: &[EndpointPort]) -> String {
    let mut v: Vec<String> = ports
        .iter()
        .map(|p| {
            format!(
                "{}/{}/{}/{}",
                p.name.as_deref().unwrap_or(""),
                p.port.unwrap_or(0),
                p.protocol.as_deref().unwrap_or("TCP"),
                p.app_protocol.as_deref().unwrap_or("")
            )
        })
        .collect();
    v.sort();
    v.join(",")
}

fn group_key(address_type: &str, ports: &[EndpointPort]) -> String {
    format!("{address_type}|{}", ports_key(ports))
}

fn endpoint_key(e: &Endpoint) -> String {
    format!(
        "{}|{}",
        e.addresses.first().map(String::as_str).unwrap_or(""),
        e.target_ref
            .as_ref()
            .and_then(|r| r.uid.as_deref())
            .unwrap_or("")
    )
}

fn add_endpoint(
    groups: &mut BTreeMap<String, EndpointGroup>,
    address_type: &str,
    ports: Vec<EndpointPort>,
    ep: Endpoint,
) {
    let g = groups
        .entry(group_key(address_type, &ports))
        .or_insert_with(|| EndpointGroup {
            address_type: address_type.into(),
            ports,
            endpoints: BTreeMap::new(),
        });
    g.endpoints.insert(endpoint_key(&ep), ep);
}

/// The endpoints of a Service with a selector, grouped (upstream `reconciler.reconcile`'s
/// desired set): every selected pod with an IP that is not finished, terminating ones included.
pub fn desired_groups(svc: &Service, pods: &[&Pod]) -> BTreeMap<String, EndpointGroup> {
    let mut groups = BTreeMap::new();
    let Some(selector) = managed_selector(svc) else {
        return groups;
    };
    let families: Vec<String> = match svc
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.clone())
        .filter(|f| !f.is_empty())
    {
        Some(f) => f,
        None => vec!["IPv4".into()],
    };
    let svc_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let publish = publish_not_ready(svc);
    for pod in pods {
        if pod.metadata.namespace != svc.metadata.namespace
            || !selector_matches(selector, pod.metadata.labels.as_ref())
            || !should_pod_be_in_endpoints(pod, true)
        {
            continue;
        }
        let ports: Vec<EndpointPort> = svc_ports
            .iter()
            .filter_map(|sp| {
                let port = find_port(pod, sp)?;
                Some(EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    port: Some(port),
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let serving = publish || is_pod_ready(pod);
        let ready = publish || (is_pod_ready(pod) && !terminating);
        for family in &families {
            let Some(ip) = pod_ip_for(pod, Some(family)) else {
                continue;
            };
            let ep = Endpoint {
                addresses: vec![ip],
                conditions: Some(EndpointConditions {
                    ready: Some(ready),
                    serving: Some(serving),
                    terminating: Some(terminating),
                }),
                hostname: pod_hostname_for(pod, svc),
                node_name: pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .filter(|n| !n.is_empty()),
                target_ref: Some(pod_reference(pod)),
                ..Default::default()
            };
            add_endpoint(&mut groups, family, ports.clone(), ep);
        }
    }
    groups
}

/// The endpoints mirrored from a hand-written Endpoints object.
pub fn mirrored_groups(ep: &Endpoints) -> BTreeMap<String, EndpointGroup> {
    let mut groups = BTreeMap::new();
    let mut count = 0;
    for subset in ep.subsets.iter().flatten() {
        let ports: Vec<EndpointPort> = subset
            .ports
            .iter()
            .flatten()
            .map(|p| EndpointPort {
                name: Some(p.name.clone().unwrap_or_default()),
                port: Some(p.port),
                protocol: Some(p.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: p.app_protocol.clone(),
            })
            .collect();
        let all = subset.addresses.iter().flatten().map(|a| (a, true)).chain(
            subset
                .not_ready_addresses
                .iter()
                .flatten()
                .map(|a| (a, false)),
        );
        for (a, ready) in all {
            if count >= MAX_MIRRORED_ENDPOINTS {
                return groups;
            }
            count += 1;
            let e = Endpoint {
                addresses: vec![a.ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(ready),
                    serving: Some(ready),
                    terminating: Some(false),
                }),
                hostname: a.hostname.clone().filter(|h| !h.is_empty()),
                node_name: a.node_name.clone().filter(|n| !n.is_empty()),
                target_ref: a.target_ref.clone(),
                ..Default::default()
            };
            add_endpoint(&mut groups, address_type(&a.ip), ports.clone(), e);
        }
    }
    groups
}

/// Writes that bring the existing slices to the desired groups.
#[derive(Debug, Default)]
pub struct SlicePlan {
    pub create: Vec<EndpointSlice>,
    pub update: Vec<EndpointSlice>,
    pub delete: Vec<String>,
}

/// What every slice of a Service carries regardless of its endpoints.
#[derive(Clone, Debug)]
pub struct SliceOwner {
    pub service: Service,
    pub managed_by: &'static str,
    /// Extra labels (the Service's, or the mirrored Endpoints').
    pub labels: BTreeMap<String, String>,
}

impl SliceOwner {
    fn labels(&self) -> BTreeMap<String, String> {
        let mut l = self.labels.clone();
        l.insert(
            SERVICE_NAME_LABEL.into(),
            self.service.metadata.name.clone().unwrap_or_default(),
        );
        l.insert(MANAGED_BY_LABEL.into(), self.managed_by.into());
        l
    }

    fn new_slice(
        &self,
        address_type: &str,
        ports: &[EndpointPort],
        endpoints: Vec<Endpoint>,
    ) -> EndpointSlice {
        let name = self.service.metadata.name.clone().unwrap_or_default();
        // Upstream `getEndpointSlicePrefix`: the name truncated so generated names stay valid.
        let prefix: String = name.chars().take(63 - 6).collect();
        EndpointSlice {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                namespace: self.service.metadata.namespace.clone(),
                labels: Some(self.labels()),
                owner_references: Some(vec![new_controller_ref(&self.service)]),
                ..Default::default()
            },
            address_type: address_type.into(),
            ports: (!ports.is_empty()).then(|| ports.to_vec()),
            endpoints: Some(endpoints),
        }
    }
}

/// Plan the writes taking `existing` (this controller's slices of the Service) to `desired`,
/// with at most `max` endpoints per slice.
pub fn plan_slices(
    owner: &SliceOwner,
    desired: &BTreeMap<String, EndpointGroup>,
    existing: &[&EndpointSlice],
    max: usize,
) -> SlicePlan {
    let mut plan = SlicePlan::default();
    let want_labels = owner.labels();
    let mut existing: Vec<&EndpointSlice> = existing.to_vec();
    existing.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let total: usize = desired.values().map(|g| g.endpoints.len()).sum();
    if total == 0 {
        // Keep (or create) one empty placeholder slice.
        let placeholder_type = desired
            .values()
            .next()
            .map(|g| g.address_type.clone())
            .unwrap_or_else(|| family_of(&owner.service));
        let mut kept = false;
        for s in existing {
            let is_placeholder = s.endpoints.as_ref().is_none_or(Vec::is_empty)
                && s.ports.as_ref().is_none_or(Vec::is_empty)
                && s.address_type == placeholder_type;
            if !kept && is_placeholder {
                kept = true;
                if s.metadata.labels.as_ref() != Some(&want_labels) {
                    let mut u = s.clone();
                    u.metadata.labels = Some(want_labels.clone());
                    plan.update.push(u);
                }
            } else {
                plan.delete
                    .push(s.metadata.name.clone().unwrap_or_default());
            }
        }
        if !kept {
            plan.create
                .push(owner.new_slice(&placeholder_type, &[], Vec::new()));
        }
        return plan;
    }
    let mut by_group: HashMap<String, Vec<&EndpointSlice>> = HashMap::new();
    for s in existing {
        by_group
            .entry(group_key(
                &s.address_type,
                s.ports.as_deref().unwrap_or(&[]),
            ))
            .or_default()
            .push(s);
    }
    for (key, group) in desired {
        let slices = by_group.remove(key).unwrap_or_default();
        let mut placed: std::collections::HashSet<&str> = std::collections::HashSet::new();
        // (slice, new endpoints, changed)
        let mut kept: Vec<(EndpointSlice, Vec<Endpoint>, bool)> = Vec::new();
        for s in slices {
            let old = s.endpoints.clone().unwrap_or_default();
            let mut new = Vec::with_capacity(old.len());
            for e in &old {
                let k = endpoint_key(e);
                if let Some((dk, d)) = group.endpoints.get_key_value(&k) {
                    if placed.insert(dk.as_str()) {
                        new.push(d.clone());
                    }
                }
            }
            let changed = new != old || s.metadata.labels.as_ref() != Some(&want_labels);
            kept.push((s.clone(), new, changed));
        }
        let mut remaining = group
            .endpoints
            .iter()
            .filter(|(k, _)| !placed.contains(k.as_str()))
            .map(|(_, e)| e.clone())
            .peekable();
        for (_, eps, changed) in kept.iter_mut() {
            while eps.len() < max {
                match remaining.next() {
                    Some(e) => {
                        eps.push(e);
                        *changed = true;
                    }
                    None => break,
                }
            }
        }
        for (s, eps, changed) in kept {
            if eps.is_empty() {
                plan.delete
                    .push(s.metadata.name.clone().unwrap_or_default());
            } else if changed {
                let mut u = s;
                u.metadata.labels = Some(want_labels.clone());
                u.endpoints = Some(eps);
                plan.update.push(u);
            }
        }
        while remaining.peek().is_some() {
            let chunk: Vec<Endpoint> = remaining.by_ref().take(max).collect();
            plan.create
                .push(owner.new_slice(&group.address_type, &group.ports, chunk));
        }
    }
    // Slices of port sets or families no longer wanted.
    for slices in by_group.into_values() {
        plan.delete.extend(
            slices
                .into_iter()
                .map(|s| s.metadata.name.clone().unwrap_or_default()),
        );
    }
    plan
}

fn family_of(svc: &Service) -> String {
    svc.spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first().cloned())
        .unwrap_or_else(|| "IPv4".into())
}

// ---------------------------------------------------------------------------------------------
// Tracking our own writes until the informer shows them.

/// Slice name -> (resourceVersion written, or `None` for a delete; when).
type PendingWrites = HashMap<String, (Option<String>, Instant)>;

#[derive(Default)]
struct Tracker {
    /// Per Service.
    pending: Mutex<HashMap<ObjectKey, PendingWrites>>,
}

const TRACK_TIMEOUT: Duration = Duration::from_secs(10);

fn rv_at_least(cached: Option<&str>, want: &str) -> bool {
    match (
        cached.and_then(|c| c.parse::<u64>().ok()),
        want.parse::<u64>().ok(),
    ) {
        (Some(c), Some(w)) => c >= w,
        _ => cached == Some(want),
    }
}

impl Tracker {
    fn record(&self, key: &ObjectKey, name: String, rv: Option<String>) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .insert(name, (rv, Instant::now()));
    }

    /// Whether the cache reflects every write made for `key` (stale entries expire).
    fn caught_up(&self, key: &ObjectKey, slices: &Informer<EndpointSlice>) -> bool {
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = map.get_mut(key) else {
            return true;
        };
        p.retain(|name, (rv, at)| {
            if at.elapsed() > TRACK_TIMEOUT {
                return false;
            }
            let cached = slices.get(key.namespace.as_deref(), name);
            match rv {
                Some(rv) => {
                    !cached.is_some_and(|c| rv_at_least(c.metadata.resource_version.as_deref(), rv))
                }
                None => cached.is_some(),
            }
        });
        let ok = p.is_empty();
        if ok {
            map.remove(key);
        }
        ok
    }

    fn forget(&self, key: &ObjectKey) {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

// ---------------------------------------------------------------------------------------------
// The controllers.

struct SliceReconciler {
    client: Client,
    mirroring: bool,
    services: Informer<Service>,
    pods: Informer<Pod>,
    endpoints: Informer<Endpoints>,
    slices: Informer<EndpointSlice>,
    tracker: Tracker,
    recorder: EventRecorder,
}

impl SliceReconciler {
    fn managed_by(&self) -> &'static str {
        if self.mirroring {
            MIRRORING_CONTROLLER_NAME
        } else {
            CONTROLLER_NAME
        }
    }

    fn own_slices(&self, key: &ObjectKey) -> Vec<Arc<EndpointSlice>> {
        let managed_by = self.managed_by();
        self.slices
            .list_namespace(key.ns())
            .into_iter()
            .filter(|s| {
                let l = s.metadata.labels.as_ref();
                l.and_then(|l| l.get(SERVICE_NAME_LABEL)) == Some(&key.name)
                    && l.and_then(|l| l.get(MANAGED_BY_LABEL)).map(String::as_str)
                        == Some(managed_by)
            })
            .collect()
    }

    /// The desired groups and owner, or `None` when the Service should have no slices of ours.
    fn desired(&self, key: &ObjectKey) -> Option<(SliceOwner, BTreeMap<String, EndpointGroup>)> {
        let svc = self.services.get(key.namespace.as_deref(), &key.name)?;
        if svc.metadata.deletion_timestamp.is_some() {
            return None;
        }
        if self.mirroring {
            if managed_selector(&svc).is_some()
                || svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName")
            {
                return None;
            }
            let ep = self.endpoints.get(key.namespace.as_deref(), &key.name)?;
            let mut labels = ep.metadata.labels.clone().unwrap_or_default();
            if labels.get(SKIP_MIRROR_LABEL).map(String::as_str) == Some("true") {
                return None;
            }
            labels.retain(|k, _| k != MANAGED_BY_LABEL && k != SERVICE_NAME_LABEL);
            let groups = mirrored_groups(&ep);
            Some((
                SliceOwner {
                    service: (*svc).clone(),
                    managed_by: MIRRORING_CONTROLLER_NAME,
                    labels,
                },
                groups,
            ))
        } else {
            managed_selector(&svc)?;
            let pods = self.pods.list_namespace(key.ns());
            let pods: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
            let groups = desired_groups(&svc, &pods);
            Some((
                SliceOwner {
                    service: (*svc).clone(),
                    managed_by: CONTROLLER_NAME,
                    labels: service_labels(&svc),
                },
                groups,
            ))
        }
    }
}

impl Reconciler for SliceReconciler {
    async fn reconcile(&self, key: &ObjectKey, _ctx: &ReconcileContext) -> Result<Action> {
        if !self.tracker.caught_up(key, &self.slices) {
            return Ok(Action::requeue_after(Duration::from_millis(100)));
        }
        let existing = self.own_slices(key);
        let api = Api::<EndpointSlice>::namespaced(self.client.clone(), key.ns());
        let Some((owner, desired)) = self.desired(key) else {
            // Not ours (any more): drop what we made. Owned slices of a deleted Service are
            // also collected by the garbage collector.
            for s in existing {
                let name = s.metadata.name.clone().unwrap_or_default();
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => self.tracker.record(key, name, None),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if self
                .services
                .get(key.namespace.as_deref(), &key.name)
                .is_none()
            {
                self.tracker.forget(key);
            }
            return Ok(Action::done());
        };
        let refs: Vec<&EndpointSlice> = existing.iter().map(|s| &**s).collect();
        let plan = plan_slices(&owner, &desired, &refs, MAX_ENDPOINTS_PER_SLICE);
        let result: Result<(), kube::Error> = async {
            for s in plan.create {
                let created = api.create(&PostParams::default(), &s).await?;
                self.tracker.record(
                    key,
                    created.metadata.name.clone().unwrap_or_default(),
                    created.metadata.resource_version.clone(),
                );
            }
            for s in plan.update {
                let updated = api
                    .replace(
                        s.metadata.name.as_deref().unwrap_or_default(),
                        &PostParams::default(),
                        &s,
                    )
                    .await?;
                self.tracker.record(
                    key,
                    updated.metadata.name.clone().unwrap_or_default(),
                    updated.metadata.resource_version.clone(),
                );
            }
            for name in plan.delete {
                match api.delete(&name, &DeleteParams::default()).await {
                    Ok(_) => self.tracker.record(key, name, None),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
        .await;
        match result {
            Ok(()) => Ok(Action::done()),
            Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("terminat") => {
                Ok(Action::done())
            }
            Err(e) => {
                if !matches!(&e, kube::Error::Api(s) if s.code == 409) {
                    self.recorder.event(
                        &owner.service,
                        EventType::Warning,
                        "FailedToUpdateEndpointSlices",
                        format!("Error updating Endpoint Slices for Service {key}: {e}"),
                    );
                }
                Err(e.into())
            }
        }
    }
}

fn start_inner(ctx: &ControllerContext, mirroring: bool) -> Result<BoxFuture<'static, ()>> {
    let services = ctx.informers.informer::<Service>();
    let pods = ctx.informers.informer::<Pod>();
    let endpoints = ctx.informers.informer::<Endpoints>();
    let slices = ctx.informers.informer::<EndpointSlice>();
    let (name, component) = if mirroring {
        (
            "endpointslicemirroring",
            "endpoint-slice-mirroring-controller",
        )
    } else {
        ("endpointslice", "endpoint-slice-controller")
    };
    let rec = Arc::new(SliceReconciler {
        client: ctx.client.clone(),
        mirroring,
        services: services.clone(),
        pods: pods.clone(),
        endpoints: endpoints.clone(),
        slices: slices.clone(),
        tracker: Tracker::default(),
        recorder: ctx.recorder(component),
    });
    let controller = Controller::new(name, rec, ctx.metrics.clone());
    let q = controller.queue();
    services.subscribe(move |c: &Change<Service>| q.add(ObjectKey::of(&**c.object())));
    let managed_by = if mirroring {
        MIRRORING_CONTROLLER_NAME
    } else {
        CONTROLLER_NAME
    };
    let q = controller.queue();
    slices.subscribe(move |c: &Change<EndpointSlice>| {
        let s = c.object();
        let l = s.metadata.labels.as_ref();
        if let (Some(svc), Some(m)) = (
            l.and_then(|l| l.get(SERVICE_NAME_LABEL)),
            l.and_then(|l| l.get(MANAGED_BY_LABEL)),
        ) {
            if m == managed_by && !matches!(c, Change::Added(_)) {
                q.add(ObjectKey::new(s.metadata.namespace.as_deref(), svc));
            }
        }
    });
    if mirroring {
        let q = controller.queue();
        endpoints.subscribe(move |c: &Change<Endpoints>| q.add(ObjectKey::of(&**c.object())));
    } else {
        let (q, svcs) = (controller.queue(), services.clone());
        pods.subscribe(move |c: &Change<Pod>| enqueue_services_for_pod(c, &svcs, &q));
    }
    let workers = ctx.config.concurrent_service_endpoint_syncs;
    let synced = async move {
        services.wait_synced().await;
        slices.wait_synced().await;
        if mirroring {
            endpoints.wait_synced().await;
        } else {
            pods.wait_synced().await;
        }
    };
    Ok(Box::pin(controller.run(workers, synced, ctx.token.clone())))
}

/// Start the `endpointslice` controller.
pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    start_inner(ctx, false)
}

/// Start the `endpointslicemirroring` controller.
pub fn start_mirroring(ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    start_inner(ctx, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::endpoints::tests::{pod, svc};
    use k8s_openapi::api::core::v1::{EndpointAddress, EndpointSubset};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    const SEL: &[(&str, &str)] = &[("app", "web")];

    fn owner(s: &Service) -> SliceOwner {
        SliceOwner {
            service: s.clone(),
            managed_by: CONTROLLER_NAME,
            labels: service_labels(s),
        }
    }

    fn named(mut s: EndpointSlice, name: &str) -> EndpointSlice {
        s.metadata.name = Some(name.into());
        s.metadata.generate_name = None;
        s
    }

    fn ips(s: &EndpointSlice) -> Vec<&str> {
        s.endpoints
            .iter()
            .flatten()
            .map(|e| e.addresses[0].as_str())
            .collect()
    }

    #[test]
    fn conditions_follow_readiness_and_termination() {
        let s = svc(
            "web",
            Some(SEL),
            &[("http", 80, IntOrString::String("web".into()))],
        );
        let mut terminating = pod("c", "10.1.0.4", true, &[("web", 8080)]);
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let pods = [
            pod("a", "10.1.0.2", true, &[("web", 8080)]),
            pod("b", "10.1.0.3", false, &[("web", 8080)]),
            terminating,
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let groups = desired_groups(&s, &refs);
        assert_eq!(groups.len(), 1);
        let g = groups.values().next().unwrap();
        assert_eq!(g.ports[0].port, Some(8080));
        let conds: Vec<(String, bool, bool, bool)> = g
            .endpoints
            .values()
            .map(|e| {
                let c = e.conditions.clone().unwrap();
                (
                    e.addresses[0].clone(),
                    c.ready.unwrap(),
                    c.serving.unwrap(),
                    c.terminating.unwrap(),
                )
            })
            .collect();
        assert_eq!(
            conds,
            [
                ("10.1.0.2".to_string(), true, true, false),
                ("10.1.0.3".to_string(), false, false, false),
                ("10.1.0.4".to_string(), false, true, true)
            ]
        );
    }

    #[test]
    fn plan_creates_placeholder_then_fills_and_splits_at_max() {
        let s = svc("web", Some(SEL), &[("http", 80, IntOrString::Int(8080))]);
        let o = owner(&s);
        // No endpoints, no slices: one placeholder.
        let plan = plan_slices(&o, &BTreeMap::new(), &[], 2);
        assert_eq!(plan.create.len(), 1);
        assert!(plan.create[0].endpoints.as_ref().unwrap().is_empty());
        assert_eq!(
            plan.create[0].metadata.labels.as_ref().unwrap()[MANAGED_BY_LABEL],
            CONTROLLER_NAME
        );
        assert_eq!(
            plan.create[0].metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL],
            "web"
        );
        assert_eq!(
            plan.create[0].metadata.owner_references.as_ref().unwrap()[0].kind,
            "Service"
        );
        let placeholder = named(plan.create[0].clone(), "web-p");

        // Five pods, max 2 per slice: placeholder deleted, three slices created.
        let pods: Vec<Pod> = (1..=5)
            .map(|i| pod(&format!("p{i}"), &format!("10.1.0.{i}"), true, &[]))
            .collect();
        let refs: Vec<&Pod> = pods.iter().collect();
        let groups = desired_groups(&s, &refs);
        let plan = plan_slices(&o, &groups, &[&placeholder], 2);
        assert_eq!(plan.delete, ["web-p"]);
        assert_eq!(
            plan.create
                .iter()
                .map(|s| s.endpoints.as_ref().unwrap().len())
                .collect::<Vec<_>>(),
            [2, 2, 1]
        );

        // Steady state: nothing to do.
        let slices: Vec<EndpointSlice> = plan
            .create
            .into_iter()
            .enumerate()
            .map(|(i, s)| named(s, &format!("web-{i}")))
            .collect();
        let srefs: Vec<&EndpointSlice> = slices.iter().collect();
        let plan = plan_slices(&o, &groups, &srefs, 2);
        assert!(
            plan.create.is_empty() && plan.update.is_empty() && plan.delete.is_empty(),
            "{plan:?}"
        );

        // One pod becomes not ready: only its slice is updated.
        let mut pods2 = pods.clone();
        pods2[0] = pod("p1", "10.1.0.1", false, &[]);
        let refs: Vec<&Pod> = pods2.iter().collect();
        let plan = plan_slices(&o, &desired_groups(&s, &refs), &srefs, 2);
        assert_eq!(plan.update.len(), 1);
        assert_eq!(ips(&plan.update[0]), ["10.1.0.1", "10.1.0.2"]);
        assert!(!plan.update[0].endpoints.as_ref().unwrap()[0]
            .conditions
            .as_ref()
            .unwrap()
            .ready
            .unwrap());

        // Pods removed: emptied slices are deleted, a new pod fills free room.
        let refs: Vec<&Pod> = vec![&pods[0], &pods[1]];
        let plan = plan_slices(&o, &desired_groups(&s, &refs), &srefs, 2);
        assert_eq!(plan.delete, ["web-1", "web-2"]);
        assert!(plan.update.is_empty() && plan.create.is_empty());
        let extra = pod("p9", "10.1.0.9", true, &[]);
        let refs: Vec<&Pod> = vec![&pods[0], &pods[2], &extra];
        let plan = plan_slices(&o, &desired_groups(&s, &refs), &srefs, 2);
        assert_eq!(
            plan.update.iter().map(ips).collect::<Vec<_>>(),
            [vec!["10.1.0.1", "10.1.0.9"], vec!["10.1.0.3"]]
        );
        assert_eq!(plan.delete, ["web-2"]);
    }

    #[test]
    fn different_port_sets_get_different_slices() {
        let s = svc(
            "web",
            Some(SEL),
            &[("http", 80, IntOrString::String("web".into()))],
        );
        let pods = [
            pod("a", "10.1.0.2", true, &[("web", 8080)]),
            pod("b", "10.1.0.3", true, &[("web", 9090)]),
        ];
        let refs: Vec<&Pod> = pods.iter().collect();
        let plan = plan_slices(&owner(&s), &desired_groups(&s, &refs), &[], 100);
        let mut ports: Vec<i32> = plan
            .create
            .iter()
            .map(|s| s.ports.as_ref().unwrap()[0].port.unwrap())
            .collect();
        ports.sort();
        assert_eq!(ports, [8080, 9090]);
    }

    #[test]
    fn mirrored_endpoints_keep_readiness_and_ports() {
        let ep = Endpoints {
            metadata: ObjectMeta {
                name: Some("ext".into()),
                ..Default::default()
            },
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![EndpointAddress {
                    ip: "192.168.1.1".into(),
                    ..Default::default()
                }]),
                not_ready_addresses: Some(vec![
                    EndpointAddress {
                        ip: "192.168.1.2".into(),
                        ..Default::default()
                    },
                    EndpointAddress {
                        ip: "fd00::1".into(),
                        ..Default::default()
                    },
                ]),
                ports: Some(vec![k8s_openapi::api::core::v1::EndpointPort {
                    name: Some("db".into()),
                    port: 5432,
                    protocol: None,
                    app_protocol: None,
                }]),
            }]),
        };
        let groups = mirrored_groups(&ep);
        assert_eq!(groups.len(), 2);
        let v4 = groups.values().find(|g| g.address_type == "IPv4").unwrap();
        assert_eq!(v4.ports[0].port, Some(5432));
        let ready: Vec<(String, bool)> = v4
            .endpoints
            .values()
            .map(|e| {
                (
                    e.addresses[0].clone(),
                    e.conditions.as_ref().unwrap().ready.unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ready,
            [
                ("192.168.1.1".to_string(), true),
                ("192.168.1.2".to_string(), false)
            ]
        );
        assert_eq!(
            groups
                .values()
                .find(|g| g.address_type == "IPv6")
                .unwrap()
                .endpoints
                .len(),
            1
        );
    }

    #[test]
    fn resource_versions_compare_numerically() {
        assert!(rv_at_least(Some("12"), "9"));
        assert!(!rv_at_least(Some("9"), "12"));
        assert!(!rv_at_least(None, "1"));
    }
}
