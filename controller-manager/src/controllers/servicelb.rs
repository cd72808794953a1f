//! The built-in service load balancer (as k3s's ServiceLB, without its per-service pods):
//! every Service of type LoadBalancer without a `loadBalancerClass` gets, in
//! `status.loadBalancer.ingress`, the addresses of the nodes that can take traffic — Ready and
//! schedulable, each node's ExternalIPs if it has any, else its InternalIPs — sorted. The
//! proxy on every node already answers on those addresses (node ports and load-balancer IP
//! rules), so `kubectl expose --type=LoadBalancer` gets an EXTERNAL-IP that works.
//!
//! Services that stop being LoadBalancers lose the ingress list; Services with a
//! `loadBalancerClass` belong to another implementation and are never touched. The decision is
//! the pure [`desired_ingress`]; the status is written with a merge patch on `/status` only
//! when the address list differs.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;

use crate::framework::{
    Action, BoxFuture, Change, Controller, ControllerContext, EventRecorder, EventType, Informer,
    ObjectKey, ReconcileContext, Reconciler, Result,
};

/// What the status of one Service should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not ours (a `loadBalancerClass`), or not a LoadBalancer with nothing to clear.
    Ignore,
    /// `status.loadBalancer.ingress` should list exactly these IPs (empty: no field).
    Ingress(Vec<String>),
}

/// Ready (condition `Ready=True`) and not cordoned.
pub fn node_eligible(node: &Node) -> bool {
    let schedulable = !node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false);
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    schedulable && ready && node.metadata.deletion_timestamp.is_none()
}

/// The addresses a node offers: its ExternalIPs, or its InternalIPs when it has none.
pub fn node_addresses(node: &Node) -> Vec<String> {
    let addrs = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .cloned()
        .unwrap_or_default();
    let of = |t: &str| -> Vec<String> {
        addrs
            .iter()
            .filter(|a| a.type_ == t && a.address.parse::<std::net::IpAddr>().is_ok())
            .map(|a| a.address.clone())
            .collect()
    };
    let external = of("ExternalIP");
    if external.is_empty() {
        of("InternalIP")
    } else {
        external
    }
}

/// The current ingress IPs of a Service.
pub fn current_ingress(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect()
}

/// What `svc`'s load-balancer status should be, given the nodes.
pub fn desired_ingress(svc: &Service, nodes: &[Arc<Node>]) -> Decision {
    let Some(spec) = svc.spec.as_ref() else {
        return Decision::Ignore;
    };
    if spec.load_balancer_class.is_some() {
        return Decision::Ignore;
    }
    if spec.type_.as_deref() != Some("LoadBalancer") {
        // It was a LoadBalancer once (or someone wrote a status): nothing may stay published.
        return if current_ingress(svc).is_empty() {
            Decision::Ignore
        } else {
            Decision::Ingress(Vec::new())
        };
    }
    let mut ips: Vec<String> = nodes
        .iter()
        .filter(|n| node_eligible(n))
        .flat_map(|n| node_addresses(n))
        .collect();
    // Only the Service's IP families (IPv4 unless it says otherwise).
    let families = spec
        .ip_families
        .clone()
        .unwrap_or_else(|| vec!["IPv4".into()]);
    ips.retain(|ip| {
        let fam = if ip.contains(':') { "IPv6" } else { "IPv4" };
        families.iter().any(|f| f == fam)
    });
    ips.sort_by_key(|ip| ip.parse::<std::net::IpAddr>().ok());
    ips.dedup();
    Decision::Ingress(ips)
}

/// The part of a Node this controller reads (changes elsewhere, e.g. heartbeats, are ignored).
fn node_digest(node: &Node) -> (bool, Vec<String>) {
    (node_eligible(node), node_addresses(node))
}

fn is_candidate(svc: &Service) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.is_none()
    })
}

struct ServiceLb {
    client: Client,
    services: Informer<Service>,
    nodes: Informer<Node>,
    recorder: EventRecorder,
}

impl Reconciler for ServiceLb {
    async fn reconcile(&self, key: &ObjectKey, _ctx: &ReconcileContext) -> Result<Action> {
        let Some(svc) = self.services.get(key.namespace.as_deref(), &key.name) else {
            return Ok(Action::done());
        };
        if svc.metadata.deletion_timestamp.is_some() {
            return Ok(Action::done());
        }
        let nodes = self.nodes.store().state();
        let Decision::Ingress(want) = desired_ingress(&svc, &nodes) else {
            return Ok(Action::done());
        };
        let have = current_ingress(&svc);
        if have == want {
            return Ok(Action::done());
        }
        let ingress = if want.is_empty() {
            serde_json::Value::Null
        } else {
            json!(want
                .iter()
                .map(|ip| json!({ "ip": ip }))
                .collect::<Vec<_>>())
        };
        let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
        let api: Api<Service> = Api::namespaced(self.client.clone(), key.ns());
        match api
            .patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(service = %key, from = ?have, to = ?want, "updated load-balancer ingress");
                self.recorder.event(
                    &*svc,
                    EventType::Normal,
                    "UpdatedIngressIP",
                    format!(
                        "LoadBalancer Ingress IP addresses updated: {}",
                        if want.is_empty() {
                            "<none>".to_string()
                        } else {
                            want.join(", ")
                        }
                    ),
                );
                Ok(Action::done())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Action::done()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Start the `servicelb` controller.
pub fn start(ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    let services = ctx.informers.informer::<Service>();
    let nodes = ctx.informers.informer::<Node>();
    let rec = Arc::new(ServiceLb {
        client: ctx.client.clone(),
        services: services.clone(),
        nodes: nodes.clone(),
        recorder: ctx.recorder("service-lb-controller"),
    });
    let controller = Controller::new("servicelb", rec, ctx.metrics.clone());
    let q = controller.queue();
    services.subscribe(move |c: &Change<Service>| {
        let svc = c.object();
        let was = c.old().is_some_and(|o| is_candidate(o));
        if is_candidate(svc) || was || !current_ingress(svc).is_empty() {
            q.add(ObjectKey::of(&**svc));
        }
    });
    let (q, svcs) = (controller.queue(), services.clone());
    nodes.subscribe(move |c: &Change<Node>| {
        let changed = match c {
            Change::Updated { old, new } => node_digest(old) != node_digest(new),
            _ => true,
        };
        if changed {
            for s in svcs.store().state() {
                if is_candidate(&s) {
                    q.add(ObjectKey::of(&*s));
                }
            }
        }
    });
    let synced = async move {
        services.wait_synced().await;
        nodes.wait_synced().await;
    };
    Ok(Box::pin(controller.run(1, synced, ctx.token.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, NodeAddress, NodeCondition, NodeSpec, NodeStatus,
        ServiceSpec, ServiceStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, ready: bool, unschedulable: bool, addrs: &[(&str, &str)]) -> Arc<Node> {
        Arc::new(Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                unschedulable: Some(unschedulable),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                addresses: Some(
                    addrs
                        .iter()
                        .map(|(t, a)| NodeAddress {
                            type_: t.to_string(),
                            address: a.to_string(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        })
    }

    fn svc(type_: &str, class: Option<&str>, ingress: &[&str]) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some("web".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some(type_.into()),
                load_balancer_class: class.map(String::from),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        ingress
                            .iter()
                            .map(|ip| LoadBalancerIngress {
                                ip: Some(ip.to_string()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                }),
                ..Default::default()
            }),
        }
    }

    fn nodes() -> Vec<Arc<Node>> {
        vec![
            node("c", true, false, &[("InternalIP", "10.200.0.13")]),
            node(
                "a",
                true,
                false,
                &[("Hostname", "a"), ("InternalIP", "10.200.0.11")],
            ),
            node(
                "b",
                true,
                false,
                &[
                    ("InternalIP", "10.200.0.12"),
                    ("ExternalIP", "203.0.113.12"),
                ],
            ),
            node("not-ready", false, false, &[("InternalIP", "10.200.0.14")]),
            node("cordoned", true, true, &[("InternalIP", "10.200.0.15")]),
            node("v6", true, false, &[("InternalIP", "fd00::16")]),
        ]
    }

    #[test]
    fn decisions() {
        let ing = |v: &[&str]| Decision::Ingress(v.iter().map(|s| s.to_string()).collect());
        let cases: Vec<(&str, Service, Vec<Arc<Node>>, Decision)> = vec![
            (
                "ready schedulable nodes, ExternalIP preferred, sorted, IPv4 only",
                svc("LoadBalancer", None, &[]),
                nodes(),
                ing(&["10.200.0.11", "10.200.0.13", "203.0.113.12"]),
            ),
            (
                "already published: same list (the caller skips the write)",
                svc("LoadBalancer", None, &["10.200.0.11"]),
                vec![node("a", true, false, &[("InternalIP", "10.200.0.11")])],
                ing(&["10.200.0.11"]),
            ),
            (
                "no eligible node: empty",
                svc("LoadBalancer", None, &["10.200.0.11"]),
                vec![node("a", false, false, &[("InternalIP", "10.200.0.11")])],
                ing(&[]),
            ),
            (
                "another implementation's class is left alone",
                svc("LoadBalancer", Some("example.com/lb"), &[]),
                nodes(),
                Decision::Ignore,
            ),
            (
                "type changed away from LoadBalancer: cleared",
                svc("ClusterIP", None, &["10.200.0.11"]),
                nodes(),
                ing(&[]),
            ),
            (
                "never a LoadBalancer: ignored",
                svc("NodePort", None, &[]),
                nodes(),
                Decision::Ignore,
            ),
        ];
        for (name, s, n, want) in cases {
            assert_eq!(desired_ingress(&s, &n), want, "{name}");
        }
    }

    #[test]
    fn dual_stack_services_get_both_families() {
        let mut s = svc("LoadBalancer", None, &[]);
        s.spec.as_mut().unwrap().ip_families = Some(vec!["IPv4".into(), "IPv6".into()]);
        assert_eq!(
            desired_ingress(&s, &nodes()),
            Decision::Ingress(
                ["10.200.0.11", "10.200.0.13", "203.0.113.12", "fd00::16"]
                    .map(String::from)
                    .to_vec()
            )
        );
    }
}
