//! ServiceAccount controller and root CA publisher (upstream `pkg/controller/serviceaccount`
//! and `pkg/controller/certificates/rootcacertpublisher`).
//!
//! Guarantees: every active (not terminating) namespace has a `default` ServiceAccount, recreated
//! when deleted; every active namespace has a `kube-root-ca.crt` ConfigMap whose `ca.crt` is the
//! cluster CA, restored when deleted or edited. Both are keyed by namespace name, so a change to
//! either the namespace or the managed object reconciles the namespace.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::framework::{
    Action, BoxFuture, Change, Controller, ControllerContext, Error, Informer, ObjectKey,
    ReconcileContext, Reconciler, Result,
};

/// The ServiceAccount every namespace gets.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The ConfigMap carrying the cluster CA.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// Its key.
pub const ROOT_CA_KEY: &str = "ca.crt";
/// Upstream's description annotation on the ConfigMap.
pub const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

fn is_active(ns: &Namespace) -> bool {
    ns.metadata.deletion_timestamp.is_none()
        && ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
}

fn is_already_exists(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// A namespace being deleted refuses new objects with 403 (NamespaceTerminating): not an error.
fn is_forbidden_or_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403 || s.code == 404)
}

// ---------------------------------------------------------------------------------------------
// ServiceAccounts.

struct ServiceAccountReconciler {
    client: Client,
    namespaces: Informer<Namespace>,
    accounts: Informer<ServiceAccount>,
}

impl Reconciler for ServiceAccountReconciler {
    async fn reconcile(&self, key: &ObjectKey, _ctx: &ReconcileContext) -> Result<Action> {
        let Some(ns) = self.namespaces.get(None, &key.name) else {
            return Ok(Action::done());
        };
        if !is_active(&ns)
            || self
                .accounts
                .get(Some(&key.name), DEFAULT_SERVICE_ACCOUNT)
                .is_some()
        {
            return Ok(Action::done());
        }
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(DEFAULT_SERVICE_ACCOUNT.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match Api::<ServiceAccount>::namespaced(self.client.clone(), &key.name)
            .create(&PostParams::default(), &sa)
            .await
        {
            Ok(_) => {
                tracing::info!(namespace = %key.name, "created default service account");
                Ok(Action::done())
            }
            Err(e) if is_already_exists(&e) || is_forbidden_or_gone(&e) => Ok(Action::done()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Start the `serviceaccount` controller.
pub fn start_serviceaccount(ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    let namespaces = ctx.informers.informer::<Namespace>();
    let accounts = ctx.informers.informer::<ServiceAccount>();
    let rec = Arc::new(ServiceAccountReconciler {
        client: ctx.client.clone(),
        namespaces: namespaces.clone(),
        accounts: accounts.clone(),
    });
    let controller = Controller::new("serviceaccount", rec, ctx.metrics.clone());
    let q = controller.queue();
    namespaces.subscribe(move |c: &Change<Namespace>| {
        if !matches!(c, Change::Deleted(_)) {
            q.add(ObjectKey::cluster(
                c.object().metadata.name.as_deref().unwrap_or_default(),
            ));
        }
    });
    let q = controller.queue();
    accounts.subscribe(move |c: &Change<ServiceAccount>| {
        let m = &c.object().metadata;
        if matches!(c, Change::Deleted(_)) && m.name.as_deref() == Some(DEFAULT_SERVICE_ACCOUNT) {
            q.add(ObjectKey::cluster(
                m.namespace.as_deref().unwrap_or_default(),
            ));
        }
    });
    let synced = async move {
        namespaces.wait_synced().await;
        accounts.wait_synced().await;
    };
    Ok(Box::pin(controller.run(
        ctx.config.concurrent_serviceaccount_syncs,
        synced,
        ctx.token.clone(),
    )))
}

// ---------------------------------------------------------------------------------------------
// Root CA publisher.

/// What the `kube-root-ca.crt` ConfigMap must contain, or the merge patch bringing `current`
/// there (`None` when it already matches).
pub fn root_ca_patch(current: &ConfigMap, ca: &str) -> Option<serde_json::Value> {
    let data_ok = current
        .data
        .as_ref()
        .and_then(|d| d.get(ROOT_CA_KEY))
        .map(String::as_str)
        == Some(ca)
        && current.data.as_ref().is_some_and(|d| d.len() == 1);
    let ann_ok = current
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get("kubernetes.io/description"))
        .map(String::as_str)
        == Some(ROOT_CA_DESCRIPTION);
    if data_ok && ann_ok {
        return None;
    }
    // Merge patch: drop any other keys so the data is exactly the CA.
    let mut data = serde_json::Map::new();
    for k in current.data.iter().flat_map(|d| d.keys()) {
        data.insert(k.clone(), serde_json::Value::Null);
    }
    data.insert(ROOT_CA_KEY.into(), json!(ca));
    Some(
        json!({"metadata": {"annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}}, "data": data}),
    )
}

struct RootCaReconciler {
    client: Client,
    ca: String,
    namespaces: Informer<Namespace>,
    configmaps: Informer<ConfigMap>,
}

impl Reconciler for RootCaReconciler {
    async fn reconcile(&self, key: &ObjectKey, _ctx: &ReconcileContext) -> Result<Action> {
        let Some(ns) = self.namespaces.get(None, &key.name) else {
            return Ok(Action::done());
        };
        if !is_active(&ns) {
            return Ok(Action::done());
        }
        let api = Api::<ConfigMap>::namespaced(self.client.clone(), &key.name);
        let res = match self.configmaps.get(Some(&key.name), ROOT_CA_CONFIGMAP) {
            None => {
                let cm = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(ROOT_CA_CONFIGMAP.into()),
                        annotations: Some(BTreeMap::from([(
                            "kubernetes.io/description".into(),
                            ROOT_CA_DESCRIPTION.into(),
                        )])),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([(ROOT_CA_KEY.into(), self.ca.clone())])),
                    ..Default::default()
                };
                api.create(&PostParams::default(), &cm).await.map(|_| ())
            }
            Some(cm) => match root_ca_patch(&cm, &self.ca) {
                None => return Ok(Action::done()),
                Some(p) => api
                    .patch(
                        ROOT_CA_CONFIGMAP,
                        &PatchParams::default(),
                        &Patch::Merge(&p),
                    )
                    .await
                    .map(|_| ()),
            },
        };
        match res {
            Ok(()) => Ok(Action::done()),
            Err(e) if is_already_exists(&e) || is_forbidden_or_gone(&e) => Ok(Action::done()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The CA bundle to publish: `--root-ca-file`, else the kubeconfig's certificate authority.
pub fn load_root_ca(
    root_ca_file: Option<&Path>,
    kubeconfig: Option<&Path>,
) -> std::result::Result<String, String> {
    if let Some(p) = root_ca_file {
        return std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()));
    }
    let kc = match kubeconfig {
        Some(p) => kube::config::Kubeconfig::read_from(p).map_err(|e| e.to_string())?,
        None => match kube::config::Kubeconfig::read() {
            Ok(kc) => kc,
            Err(_) => {
                let in_cluster = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
                return std::fs::read_to_string(in_cluster)
                    .map_err(|e| format!("no kubeconfig and reading {in_cluster}: {e}"));
            }
        },
    };
    let ctx_name = kc.current_context.clone().unwrap_or_default();
    let cluster_name = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone());
    let cluster = kc
        .clusters
        .iter()
        .find(|c| Some(&c.name) == cluster_name.as_ref())
        .or_else(|| kc.clusters.first())
        .and_then(|c| c.cluster.as_ref())
        .ok_or_else(|| "kubeconfig has no cluster".to_string())?;
    if let Some(data) = &cluster.certificate_authority_data {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|e| format!("certificate-authority-data: {e}"))?;
        return String::from_utf8(bytes).map_err(|e| format!("certificate-authority-data: {e}"));
    }
    if let Some(p) = &cluster.certificate_authority {
        return std::fs::read_to_string(p).map_err(|e| format!("reading {p}: {e}"));
    }
    Err("kubeconfig has no certificate authority; pass --root-ca-file".into())
}

/// Start the `root-ca-certificate-publisher` controller.
pub fn start_root_ca_publisher(ctx: &ControllerContext) -> Result<BoxFuture<'static, ()>> {
    let ca = load_root_ca(
        ctx.config.root_ca_file.as_deref(),
        ctx.config.kubeconfig.as_deref(),
    )
    .map_err(Error::msg)?;
    let namespaces = ctx.informers.informer::<Namespace>();
    let configmaps = ctx.informers.informer::<ConfigMap>();
    let rec = Arc::new(RootCaReconciler {
        client: ctx.client.clone(),
        ca,
        namespaces: namespaces.clone(),
        configmaps: configmaps.clone(),
    });
    let controller = Controller::new("root-ca-certificate-publisher", rec, ctx.metrics.clone());
    let q = controller.queue();
    namespaces.subscribe(move |c: &Change<Namespace>| {
        if !matches!(c, Change::Deleted(_)) {
            q.add(ObjectKey::cluster(
                c.object().metadata.name.as_deref().unwrap_or_default(),
            ));
        }
    });
    let q = controller.queue();
    configmaps.subscribe(move |c: &Change<ConfigMap>| {
        let m = &c.object().metadata;
        if m.name.as_deref() == Some(ROOT_CA_CONFIGMAP) && !matches!(c, Change::Added(_)) {
            q.add(ObjectKey::cluster(
                m.namespace.as_deref().unwrap_or_default(),
            ));
        }
    });
    let synced = async move {
        namespaces.wait_synced().await;
        configmaps.wait_synced().await;
    };
    Ok(Box::pin(controller.run(1, synced, ctx.token.clone())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(data: &[(&str, &str)], described: bool) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(ROOT_CA_CONFIGMAP.into()),
                annotations: described.then(|| {
                    BTreeMap::from([(
                        "kubernetes.io/description".into(),
                        ROOT_CA_DESCRIPTION.into(),
                    )])
                }),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn root_ca_configmap_is_restored_exactly() {
        assert_eq!(root_ca_patch(&cm(&[("ca.crt", "CA")], true), "CA"), None);
        let p = root_ca_patch(&cm(&[("ca.crt", "OLD"), ("extra", "x")], true), "CA").unwrap();
        assert_eq!(p["data"], json!({"ca.crt": "CA", "extra": null}));
        let p = root_ca_patch(&cm(&[("ca.crt", "CA")], false), "CA").unwrap();
        assert_eq!(
            p["metadata"]["annotations"]["kubernetes.io/description"],
            ROOT_CA_DESCRIPTION
        );
    }

    #[test]
    fn root_ca_comes_from_the_flag_or_the_kubeconfig() {
        let dir = std::env::temp_dir().join(format!("cm-rootca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, "PEM").unwrap();
        assert_eq!(load_root_ca(Some(&ca), None).unwrap(), "PEM");
        let kc = dir.join("kubeconfig");
        let data = base64::engine::general_purpose::STANDARD.encode("KCPEM");
        std::fs::write(
            &kc,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n    certificate-authority-data: {data}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\nusers:\n- name: u\n  user: {{}}\n"
            ),
        )
        .unwrap();
        assert_eq!(load_root_ca(None, Some(&kc)).unwrap(), "KCPEM");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
