//! What a fresh cluster has before anyone asks: the system namespaces, the `kubernetes`
//! Service with its Endpoints/EndpointSlice pointing at this API server, and the built-in
//! PriorityClasses. Idempotent: every start reconciles them.

use crate::registry::{FieldValidation, Registry, WriteOptions};
use crate::request::Target;
use crate::resources;
use apimachinery::errors::{ApiError, Reason};
use serde_json::{json, Value};

fn target(group: &str, kind: &str, ns: Option<&str>) -> Target {
    let r = resources::by_kind(group, kind).expect("bootstrap kinds are served");
    Target {
        resource: r,
        version: r.storage_version().to_string(),
        namespace: ns.map(String::from),
        name: None,
        subresource: None,
        subpath: None,
    }
}

fn opts() -> WriteOptions {
    WriteOptions {
        dry_run: false,
        field_manager: "kube-apiserver".into(),
        field_validation: FieldValidation::Ignore,
    }
}

async fn ensure(reg: &Registry, t: &Target, obj: Value) -> Result<(), ApiError> {
    match reg.create(t, obj, &opts()).await {
        Ok(_) => Ok(()),
        Err(e) if e.reason == Reason::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Create or update the bootstrap objects. `advertise` is this server's address and port.
pub async fn run(reg: &Registry, advertise_ip: &str, port: u16) -> Result<(), ApiError> {
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        ensure(
            reg,
            &target("", "Namespace", None),
            json!({"metadata": {"name": ns}}),
        )
        .await?;
    }
    for (name, value, desc) in [
        ("system-node-critical", 2_000_001_000i64, "Used for system critical pods that must not be moved from their current node."),
        ("system-cluster-critical", 2_000_000_000i64, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
    ] {
        ensure(reg, &target("scheduling.k8s.io", "PriorityClass", None), json!({"metadata": {"name": name}, "value": value, "description": desc, "preemptionPolicy": "PreemptLowerPriority"})).await?;
    }
    let ip = reg.alloc.range().first().to_string();
    let svc = json!({
        "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip,
            "sessionAffinity": "None",
            "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}],
        }
    });
    // Look before creating: a create with a taken clusterIP fails as Invalid ("provided IP is
    // already allocated") before the name clash, so a restart would not get AlreadyExists.
    let svct = target("", "Service", Some("default"));
    match reg.get(&svct, "kubernetes").await {
        Ok(_) => {}
        Err(e) if e.reason == Reason::NotFound => ensure(reg, &svct, svc).await?,
        Err(e) => return Err(e),
    }
    let eps = json!({
        "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": advertise_ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    });
    let ept = target("", "Endpoints", Some("default"));
    reg.update(&ept, "kubernetes", eps, &opts()).await?;
    let slice = json!({
        // No managed-by label, as upstream: the API server owns this slice, and the mirroring
        // controller deletes slices it believes it manages for Endpoints marked skip-mirror.
        "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [advertise_ip], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    });
    let st = target("discovery.k8s.io", "EndpointSlice", Some("default"));
    match reg.get(&st, "kubernetes").await {
        Ok(_) => {
            reg.update(&st, "kubernetes", slice, &opts()).await?;
        }
        Err(e) if e.reason == Reason::NotFound => ensure(reg, &st, slice).await?,
        Err(e) => return Err(e),
    }
    Ok(())
}
