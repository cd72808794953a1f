//! Object keys, owner references and label selectors: the small vocabulary watch handlers and
//! reconcilers share.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector as ApiLabelSelector, ObjectMeta, OwnerReference,
};
use kube::Resource;

/// `namespace/name` (or just `name` for cluster-scoped objects): what queues carry.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: Option<&str>, name: &str) -> Self {
        Self {
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }

    pub fn namespaced(namespace: &str, name: &str) -> Self {
        Self::new(Some(namespace), name)
    }

    pub fn cluster(name: &str) -> Self {
        Self::new(None, name)
    }

    /// The key of `obj`.
    pub fn of<K: Resource>(obj: &K) -> Self {
        let m = obj.meta();
        Self {
            namespace: m.namespace.clone(),
            name: m.name.clone().unwrap_or_default(),
        }
    }

    /// The namespace, or `""` for cluster-scoped keys.
    pub fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The managing controller's reference (`controller: true`), if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// The key of `meta`'s controller if it is of `kind` (and, as upstream checks, the caller then
/// verifies the UID against its cache before acting).
pub fn controller_key(meta: &ObjectMeta, kind: &str) -> Option<ObjectKey> {
    let r = controller_of(meta)?;
    (r.kind == kind).then(|| ObjectKey::new(meta.namespace.as_deref(), &r.name))
}

/// An ownerReference that makes `owner` the managing controller, blocking its foreground
/// deletion, as upstream's `metav1.NewControllerRef`.
pub fn new_controller_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A parsed label selector (from `apimachinery`), matching typed label maps.
#[derive(Clone, Debug)]
pub struct Selector(apimachinery::selectors::LabelSelector);

/// A selector that cannot be parsed.
#[derive(Debug, thiserror::Error)]
#[error("invalid label selector: {0}")]
pub struct SelectorError(String);

impl Selector {
    /// As upstream's `LabelSelectorAsSelector`: an empty selector matches everything, a missing
    /// one nothing.
    pub fn from_api(sel: Option<&ApiLabelSelector>) -> Result<Self, SelectorError> {
        let Some(sel) = sel else {
            return Ok(Self(apimachinery::selectors::LabelSelector::nothing()));
        };
        let v = serde_json::to_value(sel).map_err(|e| SelectorError(e.to_string()))?;
        apimachinery::selectors::LabelSelector::from_json(&v)
            .map(Self)
            .map_err(|e| SelectorError(e.to_string()))
    }

    pub fn matches(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        if self.0.is_nothing() {
            return false;
        }
        self.0
            .requirements()
            .iter()
            .all(|r| r.matches(|k| labels.and_then(|l| l.get(k)).cloned()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selector_semantics_match_upstream() {
        let sel = ApiLabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        let s = Selector::from_api(Some(&sel)).unwrap();
        let cases = [
            (labels(&[("app", "web")]), true),
            (labels(&[("app", "web"), ("tier", "fe")]), true),
            (labels(&[("app", "web"), ("tier", "db")]), false),
            (labels(&[("app", "api")]), false),
        ];
        for (l, want) in cases {
            assert_eq!(s.matches(Some(&l)), want, "{l:?}");
        }
        assert!(!Selector::from_api(None)
            .unwrap()
            .matches(Some(&labels(&[("a", "b")]))));
        assert!(Selector::from_api(Some(&ApiLabelSelector::default()))
            .unwrap()
            .matches(None));
    }

    #[test]
    fn keys_render_like_client_go() {
        assert_eq!(
            ObjectKey::namespaced("default", "web").to_string(),
            "default/web"
        );
        assert_eq!(ObjectKey::cluster("node-1").to_string(), "node-1");
    }
}
