//! The table of every served resource: group, versions, kind, names, scope, subresources and
//! storage key prefix. Discovery, routing, storage keys and `Status` details all come from here,
//! so adding a resource is one row (plus its strategy, if it needs behaviour).

/// How a resource behaves at the REST layer beyond plain CRUD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Stored objects with full CRUD + watch.
    Stored,
    /// Create-only virtual resources answered on the spot (reviews); never stored.
    Virtual,
}

/// One served resource (one row per group; all versions of the group share it).
#[derive(Debug)]
pub struct Resource {
    pub group: &'static str,
    /// Served versions, preferred first. The first one is the storage version.
    pub versions: &'static [&'static str],
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [&'static str],
    /// The etcd key segment upstream uses (`/registry/<segment>/...`).
    pub key_segment: &'static str,
    pub storage: Storage,
}

impl Resource {
    pub fn storage_version(&self) -> &'static str {
        self.versions[0]
    }
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
    pub fn group_resource(&self) -> apimachinery::errors::GroupResource<'static> {
        apimachinery::errors::GroupResource {
            group: self.group,
            resource: self.plural,
        }
    }
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }
    pub fn has_status(&self) -> bool {
        self.has_subresource("status")
    }
    /// Prefix of all keys of this resource in a namespace (or cluster-wide when `ns` is None).
    pub fn key_prefix(&self, ns: Option<&str>) -> String {
        match ns {
            Some(ns) if self.namespaced => format!("/registry/{}/{}/", self.key_segment, ns),
            _ => format!("/registry/{}/", self.key_segment),
        }
    }
    pub fn key(&self, ns: Option<&str>, name: &str) -> String {
        let mut k = self.key_prefix(ns);
        k.push_str(name);
        k
    }
    pub fn verbs(&self) -> &'static [&'static str] {
        match self.storage {
            Storage::Virtual => &["create"],
            Storage::Stored => &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ],
        }
    }
}

/// Verbs of a subresource, as upstream's discovery lists them.
pub fn subresource_verbs(sub: &str) -> &'static [&'static str] {
    match sub {
        "status" | "scale" | "approval" | "ephemeralcontainers" | "resize" => {
            &["get", "patch", "update"]
        }
        "binding" | "eviction" | "token" => &["create"],
        "log" => &["get"],
        "exec" | "attach" | "portforward" => &["create", "get"],
        "proxy" => &["create", "delete", "get", "patch", "update"],
        "finalize" => &["update"],
        _ => &["get"],
    }
}

/// The (group, version, kind) a subresource answers with in discovery.
pub fn subresource_kind(r: &Resource, sub: &str) -> (&'static str, &'static str, &'static str) {
    match sub {
        "scale" => ("autoscaling", "v1", "Scale"),
        "binding" => ("", "v1", "Binding"),
        "eviction" => ("policy", "v1", "Eviction"),
        "token" => ("authentication.k8s.io", "v1", "TokenRequest"),
        "exec" => ("", "v1", "PodExecOptions"),
        "attach" => ("", "v1", "PodAttachOptions"),
        "portforward" => ("", "v1", "PodPortForwardOptions"),
        "proxy" => match r.kind {
            "Pod" => ("", "v1", "PodProxyOptions"),
            "Service" => ("", "v1", "ServiceProxyOptions"),
            _ => ("", "v1", "NodeProxyOptions"),
        },
        _ => (r.group, r.versions[0], r.kind),
    }
}

macro_rules! res {
    ($group:expr, [$($v:expr),+], $kind:expr, $plural:expr, $singular:expr, $ns:expr,
     short: [$($s:expr),*], cat: [$($c:expr),*], sub: [$($sub:expr),*], key: $key:expr) => {
        Resource {
            group: $group,
            versions: &[$($v),+],
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: &[$($s),*],
            categories: &[$($c),*],
            subresources: &[$($sub),*],
            key_segment: $key,
            storage: Storage::Stored,
        }
    };
}

macro_rules! review {
    ($group:expr, $kind:expr, $plural:expr, $singular:expr, $ns:expr) => {
        Resource {
            group: $group,
            versions: &["v1"],
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $ns,
            short_names: &[],
            categories: &[],
            subresources: &[],
            key_segment: $plural,
            storage: Storage::Virtual,
        }
    };
}

/// Every served resource. Order within a group is the discovery order.
pub static RESOURCES: &[Resource] = &[
    // core/v1
    res!("", ["v1"], "Binding", "bindings", "binding", true, short: [], cat: [], sub: [], key: "bindings"),
    res!("", ["v1"], "ConfigMap", "configmaps", "configmap", true, short: ["cm"], cat: [], sub: [], key: "configmaps"),
    res!("", ["v1"], "Endpoints", "endpoints", "endpoints", true, short: ["ep"], cat: [], sub: [], key: "services/endpoints"),
    res!("", ["v1"], "Event", "events", "event", true, short: ["ev"], cat: [], sub: [], key: "events"),
    res!("", ["v1"], "LimitRange", "limitranges", "limitrange", true, short: ["limits"], cat: [], sub: [], key: "limitranges"),
    res!("", ["v1"], "Namespace", "namespaces", "namespace", false, short: ["ns"], cat: [], sub: ["finalize", "status"], key: "namespaces"),
    res!("", ["v1"], "Node", "nodes", "node", false, short: ["no"], cat: [], sub: ["proxy", "status"], key: "minions"),
    res!("", ["v1"], "PersistentVolumeClaim", "persistentvolumeclaims", "persistentvolumeclaim", true, short: ["pvc"], cat: [], sub: ["status"], key: "persistentvolumeclaims"),
    res!("", ["v1"], "PersistentVolume", "persistentvolumes", "persistentvolume", false, short: ["pv"], cat: [], sub: ["status"], key: "persistentvolumes"),
    res!("", ["v1"], "Pod", "pods", "pod", true, short: ["po"], cat: ["all"], sub: ["attach", "binding", "ephemeralcontainers", "eviction", "exec", "log", "portforward", "proxy", "resize", "status"], key: "pods"),
    res!("", ["v1"], "PodTemplate", "podtemplates", "podtemplate", true, short: [], cat: [], sub: [], key: "podtemplates"),
    res!("", ["v1"], "ReplicationController", "replicationcontrollers", "replicationcontroller", true, short: ["rc"], cat: ["all"], sub: ["scale", "status"], key: "controllers"),
    res!("", ["v1"], "ResourceQuota", "resourcequotas", "resourcequota", true, short: ["quota"], cat: [], sub: ["status"], key: "resourcequotas"),
    res!("", ["v1"], "Secret", "secrets", "secret", true, short: [], cat: [], sub: [], key: "secrets"),
    res!("", ["v1"], "ServiceAccount", "serviceaccounts", "serviceaccount", true, short: ["sa"], cat: [], sub: ["token"], key: "serviceaccounts"),
    res!("", ["v1"], "Service", "services", "service", true, short: ["svc"], cat: ["all"], sub: ["proxy", "status"], key: "services/specs"),
    // apps/v1
    res!("apps", ["v1"], "ControllerRevision", "controllerrevisions", "controllerrevision", true, short: [], cat: [], sub: [], key: "controllerrevisions"),
    res!("apps", ["v1"], "DaemonSet", "daemonsets", "daemonset", true, short: ["ds"], cat: ["all"], sub: ["status"], key: "daemonsets"),
    res!("apps", ["v1"], "Deployment", "deployments", "deployment", true, short: ["deploy"], cat: ["all"], sub: ["scale", "status"], key: "deployments"),
    res!("apps", ["v1"], "ReplicaSet", "replicasets", "replicaset", true, short: ["rs"], cat: ["all"], sub: ["scale", "status"], key: "replicasets"),
    res!("apps", ["v1"], "StatefulSet", "statefulsets", "statefulset", true, short: ["sts"], cat: ["all"], sub: ["scale", "status"], key: "statefulsets"),
    // authentication / authorization (virtual)
    review!(
        "authentication.k8s.io",
        "SelfSubjectReview",
        "selfsubjectreviews",
        "selfsubjectreview",
        false
    ),
    review!(
        "authentication.k8s.io",
        "TokenReview",
        "tokenreviews",
        "tokenreview",
        false
    ),
    review!(
        "authorization.k8s.io",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        true
    ),
    review!(
        "authorization.k8s.io",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        false
    ),
    review!(
        "authorization.k8s.io",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        false
    ),
    review!(
        "authorization.k8s.io",
        "SubjectAccessReview",
        "subjectaccessreviews",
        "subjectaccessreview",
        false
    ),
    // autoscaling: v2 preferred and stored; v1 converted
    res!("autoscaling", ["v2", "v1"], "HorizontalPodAutoscaler", "horizontalpodautoscalers", "horizontalpodautoscaler", true, short: ["hpa"], cat: ["all"], sub: ["status"], key: "horizontalpodautoscalers"),
    // batch/v1
    res!("batch", ["v1"], "CronJob", "cronjobs", "cronjob", true, short: ["cj"], cat: ["all"], sub: ["status"], key: "cronjobs"),
    res!("batch", ["v1"], "Job", "jobs", "job", true, short: [], cat: ["all"], sub: ["status"], key: "jobs"),
    // certificates.k8s.io/v1
    res!("certificates.k8s.io", ["v1"], "CertificateSigningRequest", "certificatesigningrequests", "certificatesigningrequest", false, short: ["csr"], cat: [], sub: ["approval", "status"], key: "certificatesigningrequests"),
    // coordination.k8s.io/v1
    res!("coordination.k8s.io", ["v1"], "Lease", "leases", "lease", true, short: [], cat: [], sub: [], key: "leases"),
    // discovery.k8s.io/v1
    res!("discovery.k8s.io", ["v1"], "EndpointSlice", "endpointslices", "endpointslice", true, short: [], cat: [], sub: [], key: "endpointslices"),
    // events.k8s.io/v1: the same objects as core/v1 events, converted
    res!("events.k8s.io", ["v1"], "Event", "events", "event", true, short: ["ev"], cat: [], sub: [], key: "events"),
    // networking.k8s.io/v1
    res!("networking.k8s.io", ["v1"], "IngressClass", "ingressclasses", "ingressclass", false, short: [], cat: [], sub: [], key: "ingressclasses"),
    res!("networking.k8s.io", ["v1"], "Ingress", "ingresses", "ingress", true, short: ["ing"], cat: [], sub: ["status"], key: "ingress"),
    res!("networking.k8s.io", ["v1"], "NetworkPolicy", "networkpolicies", "networkpolicy", true, short: ["netpol"], cat: [], sub: [], key: "networkpolicies"),
    // policy/v1
    res!("policy", ["v1"], "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", true, short: ["pdb"], cat: [], sub: ["status"], key: "poddisruptionbudgets"),
    // rbac.authorization.k8s.io/v1
    res!("rbac.authorization.k8s.io", ["v1"], "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", false, short: [], cat: [], sub: [], key: "clusterrolebindings"),
    res!("rbac.authorization.k8s.io", ["v1"], "ClusterRole", "clusterroles", "clusterrole", false, short: [], cat: [], sub: [], key: "clusterroles"),
    res!("rbac.authorization.k8s.io", ["v1"], "RoleBinding", "rolebindings", "rolebinding", true, short: [], cat: [], sub: [], key: "rolebindings"),
    res!("rbac.authorization.k8s.io", ["v1"], "Role", "roles", "role", true, short: [], cat: [], sub: [], key: "roles"),
    // scheduling.k8s.io/v1
    res!("scheduling.k8s.io", ["v1"], "PriorityClass", "priorityclasses", "priorityclass", false, short: ["pc"], cat: [], sub: [], key: "priorityclasses"),
    // storage.k8s.io/v1
    res!("storage.k8s.io", ["v1"], "StorageClass", "storageclasses", "storageclass", false, short: ["sc"], cat: [], sub: [], key: "storageclasses"),
];

/// Groups in discovery order (core first), each with its served versions, preferred first.
pub fn groups() -> &'static [(&'static str, Vec<&'static str>)] {
    static GROUPS: std::sync::OnceLock<Vec<(&'static str, Vec<&'static str>)>> =
        std::sync::OnceLock::new();
    GROUPS.get_or_init(compute_groups)
}

fn compute_groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, vs)) => {
                for v in r.versions {
                    if !vs.contains(v) {
                        vs.push(v);
                    }
                }
            }
            None => out.push((r.group, r.versions.to_vec())),
        }
    }
    // upstream lists non-core groups in a fixed priority order; ours is the table order.
    out
}

/// Resources served at group/version.
pub fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static Resource> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.versions.contains(&version))
}

/// Find a resource by group, version and plural name.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural && r.versions.contains(&version))
}

/// Find a resource by group and kind (any served version).
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
}

/// The group-version paths served (`api/v1`, `apis/apps/v1`, ...), for OpenAPI.
pub fn group_version_paths() -> Vec<String> {
    groups()
        .iter()
        .flat_map(|(g, vs)| {
            vs.iter().map(move |v| {
                if g.is_empty() {
                    format!("api/{v}")
                } else {
                    format!("apis/{g}/{v}")
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_rows() {
        assert_eq!(
            lookup("apps", "v1", "deployments").unwrap().kind,
            "Deployment"
        );
        assert_eq!(
            lookup("autoscaling", "v1", "horizontalpodautoscalers")
                .unwrap()
                .storage_version(),
            "v2"
        );
        assert!(lookup("", "v1", "nope").is_none());
        assert_eq!(
            by_kind("", "Service")
                .unwrap()
                .key("default".into(), "kubernetes"),
            "/registry/services/specs/default/kubernetes"
        );
        assert_eq!(
            by_kind("", "Node").unwrap().key(None, "n1"),
            "/registry/minions/n1"
        );
    }

    #[test]
    fn plural_names_are_unique_per_group() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.plural == b.plural),
                    "{} {}",
                    a.group,
                    a.plural
                );
            }
        }
    }
}
