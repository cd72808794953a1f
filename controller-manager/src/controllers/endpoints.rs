//! Endpoints controller (upstream `pkg/controller/endpoint`): for every Service with a
//! selector, an Endpoints object of the same name listing the matching pods' IPs — ready pods
//! in `addresses`, the others in `notReadyAddresses` — with each service port resolved per pod
//! (named `targetPort`s looked up in the pod's container ports), `hostname` for pods whose
//! `subdomain` is the service, `nodeName` and a `targetRef` to the pod.
//!
//! Selector-less Services are left alone: their Endpoints are written by hand. The desired
//! subsets are a pure function of the Service and its pods ([`compute_subsets`]), repacked so
//! addresses sharing a port set share a subset, exactly as upstream's `RepackSubsets`; the
//! object is only written when that or its labels change.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
    ServicePort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

use crate::framework::{
    Action, BoxFuture, Change, Controller, ControllerContext, EventRecorder, EventType, Informer,
    ObjectKey, ReconcileContext, Reconciler, Result, WorkQueue,
};

/// Label on the Endpoints (and slices) of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// Most addresses an Endpoints object holds (upstream `maxCapacity`).
pub const MAX_ENDPOINTS_CAPACITY: usize = 1000;
/// Annotation set when addresses were truncated to [`MAX_ENDPOINTS_CAPACITY`].
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";

// ---------------------------------------------------------------------------------------------
// Pure helpers shared with the EndpointSlice controller.

/// The Service's selector when the controllers manage its endpoints (`None` for selector-less
/// and ExternalName Services).
pub fn managed_selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    spec.selector.as_ref()
}

/// Whether `labels` match a map selector (an empty selector matches everything).
pub fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

pub fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

pub fn publish_not_ready(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        .unwrap_or(false)
}

/// `Ready=True` (upstream `podutil.IsPodReady`).
pub fn is_pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Upstream `ShouldPodBeInEndpoints`: it has an IP, is not finished for good, and (unless
/// `include_terminating`) is not being deleted.
pub fn should_pod_be_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    if pod_ip_for(pod, None).is_none() {
        return false;
    }
    if !include_terminating && pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let restart = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    match restart {
        "Never" => phase != "Failed" && phase != "Succeeded",
        "OnFailure" => phase != "Succeeded",
        _ => true,
    }
}

/// The pod IP of `family` (`IPv4`/`IPv6`; the primary IP when `None`).
pub fn pod_ip_for(pod: &Pod, family: Option<&str>) -> Option<String> {
    let st = pod.status.as_ref()?;
    let mut ips: Vec<String> = st
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    if ips.is_empty() {
        ips.extend(st.pod_ip.clone().filter(|ip| !ip.is_empty()));
    }
    match family {
        None => ips.into_iter().next(),
        Some(f) => ips.into_iter().find(|ip| address_type(ip) == f),
    }
}

/// `IPv6` for addresses with a colon, else `IPv4`.
pub fn address_type(ip: &str) -> &'static str {
    if ip.contains(':') {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// The Service's primary IP family, when it declares one.
pub fn service_family(svc: &Service) -> Option<&str> {
    svc.spec
        .as_ref()?
        .ip_families
        .as_ref()?
        .first()
        .map(String::as_str)
}

/// Upstream `podutil.FindPort`: an integer target port as is, a named one from the pod's
/// (init-sidecar and regular) container ports with the same protocol.
pub fn find_port(pod: &Pod, port: &ServicePort) -> Option<i32> {
    let proto = port.protocol.as_deref().unwrap_or("TCP");
    match port.target_port.as_ref() {
        None => Some(port.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            let spec = pod.spec.as_ref()?;
            let sidecars = spec
                .init_containers
                .iter()
                .flatten()
                .filter(|c| c.restart_policy.as_deref() == Some("Always"));
            spec.containers
                .iter()
                .chain(sidecars)
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(name.as_str())
                        && p.protocol.as_deref().unwrap_or("TCP") == proto
                })
                .map(|p| p.container_port)
        }
    }
}

/// The pod reference endpoints carry.
pub fn pod_reference(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.metadata.namespace.clone(),
        name: pod.metadata.name.clone(),
        uid: pod.metadata.uid.clone(),
        ..Default::default()
    }
}

/// Upstream `ShouldSetHostname`.
pub fn pod_hostname_for(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let host = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == svc.metadata.name.as_deref()
        && pod.metadata.namespace == svc.metadata.namespace)
        .then(|| host.to_string())
}

/// The labels an endpoints object of `svc` carries besides controller-specific ones.
pub fn service_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.metadata.labels.clone().unwrap_or_default();
    if is_headless(svc) {
        l.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        l.remove(HEADLESS_LABEL);
    }
    l
}

// ---------------------------------------------------------------------------------------------
// Endpoints computation.

fn port_key(p: &EndpointPort) -> (String, i32, String) {
    (
        p.name.clone().unwrap_or_default(),
        p.port,
        p.protocol.clone().unwrap_or_default(),
    )
}

fn addr_key(a: &EndpointAddress) -> (String, String) {
    (
        a.ip.clone(),
        a.target_ref
            .as_ref()
            .and_then(|r| r.uid.clone())
            .unwrap_or_default(),
    )
}

/// Upstream `RepackSubsets`: every address under each port it serves, then addresses with
/// identical port sets merged into one subset; sorted (addresses by IP, ports by name).
pub fn repack_subsets(subsets: Vec<EndpointSubset>) -> Vec<EndpointSubset> {
    // port (None = the "no ports" sentinel) -> address key -> (address, ready)
    type AddrKey = (String, String);
    type AddrSet = BTreeMap<AddrKey, (EndpointAddress, bool)>;
    type PortKey = Option<(String, i32, String)>;
    let mut by_port: BTreeMap<PortKey, (Option<EndpointPort>, AddrSet)> = BTreeMap::new();
    for s in subsets {
        let ports: Vec<Option<EndpointPort>> = match s.ports.filter(|p| !p.is_empty()) {
            Some(p) => p.into_iter().map(Some).collect(),
            None => vec![None],
        };
        for port in ports {
            let entry = by_port
                .entry(port.as_ref().map(port_key))
                .or_insert_with(|| (port.clone(), BTreeMap::new()));
            for a in s.addresses.iter().flatten() {
                entry.1.insert(addr_key(a), (a.clone(), true));
            }
            for a in s.not_ready_addresses.iter().flatten() {
                entry
                    .1
                    .entry(addr_key(a))
                    .or_insert_with(|| (a.clone(), false));
            }
        }
    }
    // Group ports by their (address, readiness) set.
    type Signature = Vec<(AddrKey, bool)>;
    let mut groups: BTreeMap<Signature, (AddrSet, Vec<EndpointPort>)> = BTreeMap::new();
    for (_, (port, addrs)) in by_port {
        let sig: Signature = addrs.iter().map(|(k, (_, r))| (k.clone(), *r)).collect();
        let g = groups.entry(sig).or_insert_with(|| (addrs, Vec::new()));
        g.1.extend(port);
    }
    let mut out: Vec<EndpointSubset> = groups
        .into_values()
        .map(|(addrs, mut ports)| {
            ports.sort_by_key(port_key);
            let (ready, not_ready): (Vec<_>, Vec<_>) = addrs.into_values().partition(|(_, r)| *r);
            let strip = |v: Vec<(EndpointAddress, bool)>| {
                let v: Vec<EndpointAddress> = v.into_iter().map(|(a, _)| a).collect();
                (!v.is_empty()).then_some(v)
            };
            EndpointSubset {
                addresses: strip(ready),
                not_ready_addresses: strip(not_ready),
                ports: (!ports.is_empty()).then_some(ports),
            }
        })
        .collect();
    out.sort_by(|a, b| {
        let first = |s: &EndpointSubset| {
            s.addresses
                .iter()
                .chain(s.not_ready_addresses.iter())
                .flatten()
                .map(addr_key)
                .next()
        };
        first(a).cmp(&first(b)).then_with(|| {
            a.ports
                .iter()
                .flatten()
                .map(port_key)
                .cmp(b.ports.iter().flatten().map(port_key))
        })
    });
    out
}

/// The subsets of `svc` given the pods in its namespace (upstream `syncService`), and how many
/// addresses were dropped beyond [`MAX_ENDPOINTS_CAPACITY`].
pub fn compute_subsets(svc: &Service, pods: &[&Pod]) -> (Vec<EndpointSubset>, usize) {
    let Some(selector) = managed_selector(svc) else {
        return (Vec::new(), 0);
    };
    let tolerate_unready = publish_not_ready(svc);
    let family = service_family(svc);
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut pods: Vec<&Pod> = pods
        .iter()
        .copied()
        .filter(|p| {
            p.metadata.namespace == svc.metadata.namespace
                && selector_matches(selector, p.metadata.labels.as_ref())
        })
        .collect();
    pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut subsets = Vec::new();
    for pod in pods {
        if !should_pod_be_in_endpoints(pod, tolerate_unready) {
            continue;
        }
        let Some(ip) = pod_ip_for(pod, family) else {
            continue;
        };
        let addr = EndpointAddress {
            ip,
            hostname: pod_hostname_for(pod, svc),
            node_name: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            target_ref: Some(pod_reference(pod)),
        };
        let ready = tolerate_unready || is_pod_ready(pod);
        let subset = |ports: Option<Vec<EndpointPort>>| {
            if ready {
                EndpointSubset {
                    addresses: Some(vec![addr.clone()]),
                    ports,
                    ..Default::default()
                }
            } else {
                EndpointSubset {
                    not_ready_addresses: Some(vec![addr.clone()]),
                    ports,
                    ..Default::default()
                }
            }
        };
        if ports.is_empty() {
            if is_headless(svc) {
                subsets.push(subset(None));
            }
            continue;
        }
        for sp in &ports {
            let Some(port) = find_port(pod, sp) else {
                tracing::debug!(pod = ?pod.metadata.name, port = ?sp.name, "no suitable container port for service port");
                continue;
            };
            subsets.push(subset(Some(vec![EndpointPort {
                name: sp.name.clone().filter(|n| !n.is_empty()),
                port,
                protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                app_protocol: sp.app_protocol.clone(),
            }])));
        }
    }
    let mut subsets = repack_subsets(subsets);
    let truncated = truncate_subsets(&mut subsets, MAX_ENDPOINTS_CAPACITY);
    (subsets, truncated)
}

/// Keep at most `max` addresses, ready ones first (upstream `truncateEndpoints`, simplified
/// to a stable cut); returns how many were dropped.
fn truncate_subsets(subsets: &mut [EndpointSubset], max: usize) -> usize {
    let total: usize = subsets
        .iter()
        .map(|s| {
            s.addresses.as_ref().map_or(0, Vec::len)
                + s.not_ready_addresses.as_ref().map_or(0, Vec::len)
        })
        .sum();
    if total <= max {
        return 0;
    }
    let mut budget = max;
    for s in subsets.iter_mut() {
        if let Some(a) = s.addresses.as_mut() {
            a.truncate(budget);
            budget -= a.len();
        }
    }
    for s in subsets.iter_mut() {
        if let Some(a) = s.not_ready_addresses.as_mut() {
            a.truncate(budget);
            budget -= a.len();
        }
    }
    total - max
}

/// The Endpoints object `svc` should have.
pub fn desired_endpoints(svc: &Service, pods: &[&Pod]) -> Endpoints {
    let (subsets, truncated) = compute_subsets(svc, pods);
    let annotations = (truncated > 0).then(|| {
        BTreeMap::from([(
            OVER_CAPACITY_ANNOTATION.to_string(),
            "truncated".to_string(),
        )])
    });
    Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: svc.metadata.namespace.clone(),
            labels: Some(service_labels(svc)),
            annotations,
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

/// Whether `current` already is `desired` (subsets, labels, the over-capacity annotation).
pub fn endpoints_up_to_date(current: &Endpoints, desired: &Endpoints) -> bool {
    let norm = |s: &Option<Vec<EndpointSubset>>| s.clone().filter(|v| !v.is_empty());
    let labels = |e: &Endpoints| e.metadata.labels.clone().unwrap_or_default();
    let over = |e: &Endpoints| {
        e.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(OVER_CAPACITY_ANNOTATION))
            .cloned()
    };
    norm(&current.subsets) == norm(&desired.subsets)
        && labels(current) == labels(desired)
        && over(current) == over(desired)
}

// ---------------------------------------------------------------------------------------------
// The controller.

struct EndpointsReconciler {
    client: Client,
    services: Informer<Service>,
    pods: Informer<Pod>,
    endpoints: Informer<Endpoints>,
    recorder: EventRecorder,
}

impl Reconciler for EndpointsReconciler {
    async fn reconcile(&self, key: &ObjectKey, _ctx: &ReconcileContext) -> Result<Action> {
        let api = Api::<Endpoints>::namespaced(self.client.clone(), key.ns());
        let Some(svc) = self.services.get(key.namespace.as_deref(), &key.name) else {
            // The Service is gone: so are its Endpoints (upstream deletes them unconditionally).
            if self
                .endpoints
                .get(key.namespace.as_deref(), &key.name)
                .is_some()
            {
                match api.delete(&key.name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(Action::done());
        };
        if managed_selector(&svc).is_none() || svc.metadata.deletion_timestamp.is_some() {
            return Ok(Action::done());
        }
        let pods = self.pods.list_namespace(key.ns());
        let pods: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
        let mut desired = desired_endpoints(&svc, &pods);
        let current = self.endpoints.get(key.namespace.as_deref(), &key.name);
        let result = match &current {
            Some(cur) if endpoints_up_to_date(cur, &desired) => return Ok(Action::done()),
            Some(cur) => {
                // Keep annotations others set; replace ours.
                let mut ann = cur.metadata.annotations.clone().unwrap_or_default();
                ann.remove(OVER_CAPACITY_ANNOTATION);
                ann.extend(desired.metadata.annotations.take().unwrap_or_default());
                desired.metadata.annotations = (!ann.is_empty()).then_some(ann);
                desired.metadata.resource_version = cur.metadata.resource_version.clone();
                api.replace(&key.name, &PostParams::default(), &desired)
                    .await
                    .map(|_| ())
            }
            None => api
                .create(&PostParams::default(), &desired)
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => Ok(Action::done()),
            // The namespace is terminating: nothing to keep in sync.
            Err(kube::Error::Api(s))
                if s.code == 403 && s.reason == "Forbidden" && s.message.contains("terminat") =>
            {
                Ok(Action::done())
            }
            Err(e) => {
                if !matches!(&e, kube::Error::Api(s) if s.code == 409) {
                    let (reason, verb) = if current.is_some() {
                        ("FailedToUpdateEndpoint", "update")
                    } else {
                        ("FailedToCreateEndpoint", "create")
                    };
                    self.recorder.event(
                        &*svc,
                        EventType::Warning,
                        reason,
                        format!("Failed to {verb} endpoint {}: {e}", key),
                    );
                }
                Err(e.into())
            }
        }
    }
}

/// Queue the Services (of the pod's namespace) whose selector matches the pod before or after
/// the change. Shared with the EndpointSlice controller.
pub fn enqueue_services_for_pod(
    c: &Change<Pod>,
    services: &Informer<Service>,
    q: &WorkQueue<ObjectKey>,
) {
    let pod = c.object();
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    let old_labels = c.old().and_then(|o| o.metadata.labels.clone());
    for svc in services.list_namespace(ns) {
        let Some(sel) = managed_selector(&svc) else {
            continue;
        };
        if selector_matches(sel, pod.metadata.labels.as_ref())
            || (c.old().is_some() && selector_matches(sel, old_labels.as_ref()))
        {
            q.add(ObjectKey::of(&*svc));
        }
    }
}

/// Start the `endpoint` controller.
pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    let services = ctx.informers.informer::<Service>();
    let pods = ctx.informers.informer::<Pod>();
    let endpoints = ctx.informers.informer::<Endpoints>();
    let rec = Arc::new(EndpointsReconciler {
        client: ctx.client.clone(),
        services: services.clone(),
        pods: pods.clone(),
        endpoints: endpoints.clone(),
        recorder: ctx.recorder("endpoint-controller"),
    });
    let controller = Controller::new("endpoint", rec, ctx.metrics.clone());
    let q = controller.queue();
    services.subscribe(move |c: &Change<Service>| q.add(ObjectKey::of(&**c.object())));
    let (q, svcs) = (controller.queue(), services.clone());
    pods.subscribe(move |c: &Change<Pod>| enqueue_services_for_pod(c, &svcs, &q));
    // Endpoints edited or deleted by someone else are put back.
    let (q, svcs) = (controller.queue(), services.clone());
    endpoints.subscribe(move |c: &Change<Endpoints>| {
        let key = ObjectKey::of(&**c.object());
        if !matches!(c, Change::Added(_))
            && svcs
                .get(key.namespace.as_deref(), &key.name)
                .is_some_and(|s| managed_selector(&s).is_some())
        {
            q.add(key);
        }
    });
    let synced = async move {
        services.wait_synced().await;
        pods.wait_synced().await;
        endpoints.wait_synced().await;
    };
    Ok(Box::pin(controller.run(
        ctx.config.concurrent_endpoint_syncs,
        synced,
        ctx.token.clone(),
    )))
}

/// The port sets of a subset list, for tests and callers comparing shapes.
pub fn subset_port_sets(subsets: &[EndpointSubset]) -> Vec<BTreeSet<(String, i32)>> {
    subsets
        .iter()
        .map(|s| {
            s.ports
                .iter()
                .flatten()
                .map(|p| (p.name.clone().unwrap_or_default(), p.port))
                .collect()
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodIP, PodSpec, PodStatus, ServiceSpec,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    pub fn svc(
        name: &str,
        selector: Option<&[(&str, &str)]>,
        ports: &[(&str, i32, IntOrString)],
    ) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: selector.map(|s| {
                    s.iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                }),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, t)| ServicePort {
                            name: Some(n.to_string()),
                            port: *p,
                            target_port: Some(t.clone()),
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                cluster_ip: Some("10.0.0.1".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub fn pod(name: &str, ip: &str, ready: bool, named_ports: &[(&str, i32)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(
                        named_ports
                            .iter()
                            .map(|(n, p)| ContainerPort {
                                name: Some(n.to_string()),
                                container_port: *p,
                                protocol: Some("TCP".into()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: (!ip.is_empty()).then(|| ip.to_string()),
                pod_ips: (!ip.is_empty()).then(|| vec![PodIP { ip: ip.to_string() }]),
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn ips(v: &Option<Vec<EndpointAddress>>) -> Vec<&str> {
        v.iter().flatten().map(|a| a.ip.as_str()).collect()
    }

    #[test]
    fn subsets_split_ready_and_not_ready_and_resolve_named_ports() {
        let sel: &[(&str, &str)] = &[("app", "web")];
        let s = svc(
            "web",
            Some(sel),
            &[("http", 80, IntOrString::String("web".into()))],
        );
        let mut terminating = pod("d", "10.1.0.4", true, &[("web", 8080)]);
        terminating.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        let mut other = pod("e", "10.1.0.5", true, &[("web", 8080)]);
        other.metadata.labels = Some(BTreeMap::from([("app".to_string(), "api".to_string())]));
        struct Case {
            name: &'static str,
            pods: Vec<Pod>,
            ready: Vec<Vec<&'static str>>,
            not_ready: Vec<Vec<&'static str>>,
            ports: Vec<Vec<i32>>,
        }
        let cases = vec![
            Case {
                name: "no pods",
                pods: vec![],
                ready: vec![],
                not_ready: vec![],
                ports: vec![],
            },
            Case {
                name: "ready and not ready share a port set",
                pods: vec![
                    pod("a", "10.1.0.2", true, &[("web", 8080)]),
                    pod("b", "10.1.0.3", false, &[("web", 8080)]),
                ],
                ready: vec![vec!["10.1.0.2"]],
                not_ready: vec![vec!["10.1.0.3"]],
                ports: vec![vec![8080]],
            },
            Case {
                name: "named port resolved per pod",
                pods: vec![
                    pod("a", "10.1.0.2", true, &[("web", 8080)]),
                    pod("b", "10.1.0.3", true, &[("web", 9090)]),
                ],
                ready: vec![vec!["10.1.0.2"], vec!["10.1.0.3"]],
                not_ready: vec![vec![], vec![]],
                ports: vec![vec![8080], vec![9090]],
            },
            Case {
                name: "pod without the named port is skipped",
                pods: vec![pod("a", "10.1.0.2", true, &[("other", 8080)])],
                ready: vec![],
                not_ready: vec![],
                ports: vec![],
            },
            Case {
                name: "pod without IP skipped",
                pods: vec![pod("a", "", true, &[("web", 8080)])],
                ready: vec![],
                not_ready: vec![],
                ports: vec![],
            },
            Case {
                name: "terminating and unselected pods skipped",
                pods: vec![terminating, other],
                ready: vec![],
                not_ready: vec![],
                ports: vec![],
            },
        ];
        for c in cases {
            let refs: Vec<&Pod> = c.pods.iter().collect();
            let (subsets, _) = compute_subsets(&s, &refs);
            assert_eq!(
                subsets
                    .iter()
                    .map(|s| ips(&s.addresses))
                    .collect::<Vec<_>>(),
                c.ready,
                "{}",
                c.name
            );
            assert_eq!(
                subsets
                    .iter()
                    .map(|s| ips(&s.not_ready_addresses))
                    .collect::<Vec<_>>(),
                c.not_ready,
                "{}",
                c.name
            );
            assert_eq!(
                subsets
                    .iter()
                    .map(|s| s.ports.iter().flatten().map(|p| p.port).collect::<Vec<_>>())
                    .collect::<Vec<_>>(),
                c.ports,
                "{}",
                c.name
            );
        }
    }

    #[test]
    fn addresses_carry_target_ref_node_and_hostname_for_subdomain_pods() {
        let sel: &[(&str, &str)] = &[("app", "web")];
        let mut s = svc("web", Some(sel), &[("http", 80, IntOrString::Int(8080))]);
        s.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let mut p = pod("a", "10.1.0.2", true, &[]);
        p.spec.as_mut().unwrap().hostname = Some("a-host".into());
        p.spec.as_mut().unwrap().subdomain = Some("web".into());
        let ep = desired_endpoints(&s, &[&p]);
        let a = &ep.subsets.as_ref().unwrap()[0].addresses.as_ref().unwrap()[0];
        assert_eq!(a.hostname.as_deref(), Some("a-host"));
        assert_eq!(a.node_name.as_deref(), Some("node-1"));
        assert_eq!(a.target_ref.as_ref().unwrap().name.as_deref(), Some("a"));
        assert_eq!(
            ep.metadata
                .labels
                .as_ref()
                .unwrap()
                .get(HEADLESS_LABEL)
                .map(String::as_str),
            Some("")
        );
        // Not the subdomain service: no hostname.
        p.spec.as_mut().unwrap().subdomain = Some("other".into());
        let ep = desired_endpoints(&s, &[&p]);
        assert_eq!(
            ep.subsets.unwrap()[0].addresses.as_ref().unwrap()[0].hostname,
            None
        );
    }

    #[test]
    fn publish_not_ready_addresses_makes_everything_ready_and_headless_without_ports_lists_ips() {
        let sel: &[(&str, &str)] = &[("app", "web")];
        let mut s = svc("web", Some(sel), &[]);
        s.spec.as_mut().unwrap().ports = None;
        s.spec.as_mut().unwrap().cluster_ip = Some("None".into());
        let p = pod("a", "10.1.0.2", false, &[]);
        let (subsets, _) = compute_subsets(&s, &[&p]);
        assert_eq!(ips(&subsets[0].not_ready_addresses), ["10.1.0.2"]);
        assert!(subsets[0].ports.is_none());
        s.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        let (subsets, _) = compute_subsets(&s, &[&p]);
        assert_eq!(ips(&subsets[0].addresses), ["10.1.0.2"]);
        // A non-headless service without ports has no endpoints.
        s.spec.as_mut().unwrap().cluster_ip = Some("10.0.0.9".into());
        assert!(compute_subsets(&s, &[&p]).0.is_empty());
    }

    #[test]
    fn selectorless_and_external_name_services_are_not_managed() {
        let s = svc("web", None, &[("http", 80, IntOrString::Int(80))]);
        assert!(managed_selector(&s).is_none());
        let sel: &[(&str, &str)] = &[("app", "web")];
        let mut s = svc("web", Some(sel), &[]);
        s.spec.as_mut().unwrap().type_ = Some("ExternalName".into());
        assert!(managed_selector(&s).is_none());
    }

    #[test]
    fn repack_merges_addresses_with_identical_port_sets() {
        let a = |ip: &str| EndpointAddress {
            ip: ip.into(),
            ..Default::default()
        };
        let p = |n: &str, port: i32| EndpointPort {
            name: Some(n.into()),
            port,
            protocol: Some("TCP".into()),
            app_protocol: None,
        };
        let input = vec![
            EndpointSubset {
                addresses: Some(vec![a("10.0.0.2")]),
                ports: Some(vec![p("http", 80)]),
                ..Default::default()
            },
            EndpointSubset {
                addresses: Some(vec![a("10.0.0.2")]),
                ports: Some(vec![p("https", 443)]),
                ..Default::default()
            },
            EndpointSubset {
                addresses: Some(vec![a("10.0.0.1")]),
                ports: Some(vec![p("http", 80)]),
                ..Default::default()
            },
            EndpointSubset {
                addresses: Some(vec![a("10.0.0.1")]),
                ports: Some(vec![p("https", 443)]),
                ..Default::default()
            },
        ];
        let out = repack_subsets(input);
        assert_eq!(out.len(), 1);
        assert_eq!(ips(&out[0].addresses), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(
            subset_port_sets(&out)[0],
            BTreeSet::from([("http".to_string(), 80), ("https".to_string(), 443)])
        );
    }

    #[test]
    fn truncation_keeps_ready_addresses_first() {
        let a = |ip: String| EndpointAddress {
            ip,
            ..Default::default()
        };
        let mut subsets = vec![EndpointSubset {
            addresses: Some((0..3).map(|i| a(format!("10.0.0.{i}"))).collect()),
            not_ready_addresses: Some((0..3).map(|i| a(format!("10.0.1.{i}"))).collect()),
            ports: None,
        }];
        assert_eq!(truncate_subsets(&mut subsets, 4), 2);
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 3);
        assert_eq!(subsets[0].not_ready_addresses.as_ref().unwrap().len(), 1);
    }
}
