//! Server-side apply and `metadata.managedFields` bookkeeping, following structured-merge-diff
//! and the apiserver's field manager: every write records which manager set which fields
//! (`FieldsV1`), an apply merges the applier's configuration into the live object, removes the
//! fields that applier stopped setting unless someone else owns them, and refuses — with
//! upstream's conflict message — to change fields another manager owns unless forced.
//!
//! All API versions of a kind are assumed to share one field layout (no conversion of
//! managed field sets between versions).

mod fieldpath;
mod walk;

pub use fieldpath::{FieldSet, Path, PathElement};

use crate::errors::{ApiError, Reason};
use crate::patch::PatchSchema;
use serde_json::{json, Map, Value};
use walk::Ctx;

/// One manager's claim on a field the apply would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager's name (`fieldManager`).
    pub manager: String,
    /// Its operation, `Apply` or `Update`.
    pub operation: String,
    /// The apiVersion of its entry (`Update` entries name it in messages).
    pub api_version: String,
    /// Its subresource, `""` for the main resource.
    pub subresource: String,
    /// The field, as upstream prints it: `.spec.template.spec.containers[name="c"].image`.
    pub field_path: String,
}

impl Conflict {
    /// The manager as upstream's conflict messages name it.
    pub fn manager_display(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

/// Why an apply was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    /// Other managers own fields the apply changes. 409 Conflict.
    #[error("{}", conflicts_message(.0))]
    Conflicts(Vec<Conflict>),
    /// The applied configuration is unusable. 400 BadRequest.
    #[error("{0}")]
    BadRequest(String),
}

impl ApplyError {
    /// The message kube-apiserver puts in the Status, e.g. `Apply failed with 1 conflict:
    /// conflict with "kubectl-client-side-apply" using apps/v1: .spec.replicas`.
    pub fn message(&self) -> String {
        self.to_string()
    }

    /// The HTTP status kube-apiserver answers with.
    pub fn code(&self) -> u16 {
        match self {
            Self::Conflicts(_) => 409,
            Self::BadRequest(_) => 400,
        }
    }

    /// The upstream `Status`: conflicts carry one `FieldManagerConflict` cause per field.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            Self::Conflicts(cs) => {
                let causes: Vec<Value> = cs
                    .iter()
                    .map(|c| {
                        json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager_display()), "field": c.field_path})
                    })
                    .collect();
                ApiError::new(Reason::Conflict, self.message())
                    .with_details(json!({ "causes": causes }))
            }
            Self::BadRequest(m) => ApiError::bad_request(m.clone()),
        }
    }
}

fn conflicts_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager_display(),
            only.field_path
        );
    }
    let mut managers: Vec<String> = conflicts.iter().map(Conflict::manager_display).collect();
    managers.sort();
    managers.dedup();
    let mut lines = Vec::new();
    for m in &managers {
        lines.push(format!("conflicts with {m}:"));
        for c in conflicts.iter().filter(|c| &c.manager_display() == m) {
            lines.push(format!("- {}", c.field_path));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: String,
    set: FieldSet,
}

impl Entry {
    /// Entries with equal identities are one manager (upstream's manager identifier: appliers
    /// are one manager across API versions, updaters are not).
    fn same_identity(&self, other: &Entry) -> bool {
        self.manager == other.manager
            && self.operation == other.operation
            && self.subresource == other.subresource
            && (self.operation == "Apply" || self.api_version == other.api_version)
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(self.manager));
        m.insert("operation".into(), json!(self.operation));
        m.insert("apiVersion".into(), json!(self.api_version));
        if let Some(t) = &self.time {
            m.insert("time".into(), json!(t));
        }
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert("subresource".into(), json!(self.subresource));
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Option<Entry> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let manager = s("manager");
        let operation = s("operation");
        if operation.is_empty() || v.get("fieldsV1").is_none() {
            return None;
        }
        Some(Entry {
            manager,
            operation,
            api_version: s("apiVersion"),
            time: v.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: s("subresource"),
            set: FieldSet::from_fields_v1(&v["fieldsV1"]),
        })
    }
}

fn managed_fields(obj: &Value) -> Option<&Vec<Value>> {
    obj.get("metadata")?.get("managedFields")?.as_array()
}

fn decode(obj: Option<&Value>) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    for e in obj
        .and_then(managed_fields)
        .into_iter()
        .flatten()
        .filter_map(Entry::from_json)
    {
        match out.iter_mut().find(|o| o.same_identity(&e)) {
            Some(o) => o.set = o.set.union(&e.set),
            None => out.push(e),
        }
    }
    out
}

/// A copy of `obj` without `metadata.managedFields`, the form field sets are computed on.
fn without_managed_fields(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    v
}

/// Fields no manager owns: identity and server-maintained metadata (upstream's strip set).
/// Built once: every write takes it.
fn unowned() -> &'static FieldSet {
    static UNOWNED: std::sync::LazyLock<FieldSet> = std::sync::LazyLock::new(unowned_set);
    &UNOWNED
}

fn unowned_set() -> FieldSet {
    let f = |s: &str| PathElement::Field(s.into());
    let mut set = FieldSet::new();
    set.insert(&[f("apiVersion")]);
    set.insert(&[f("kind")]);
    set.insert(&[f("metadata")]);
    for m in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        set.insert(&[f("metadata"), f(m)]);
    }
    set
}

/// Writes `entries` (without empty ones, in upstream's order) into `obj`.
fn encode(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|p, q| {
        p.operation
            .cmp(&q.operation)
            .then_with(|| p.time.cmp(&q.time))
            .then_with(|| p.manager.cmp(&q.manager))
            .then_with(|| p.api_version.cmp(&q.api_version))
            .then_with(|| p.subresource.cmp(&q.subresource))
    });
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(meta) = meta.as_object_mut() {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert(
                "managedFields".into(),
                Value::Array(entries.iter().map(Entry::to_json).collect()),
            );
        }
    }
}

/// Server-side apply (`application/apply-patch+yaml`): merges `applied` into `live` (`None`
/// creates), removes fields `manager` applied before but no longer applies and nobody else
/// owns, and records `manager`'s `Apply` entry. Without `force`, changing a field another
/// manager owns fails with [`ApplyError::Conflicts`]; with it, ownership moves to `manager`.
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    schema: &dyn PatchSchema,
    now_rfc3339: &str,
) -> Result<Value, ApplyError> {
    if !applied.is_object() {
        return Err(ApplyError::BadRequest(
            "error decoding YAML: the applied configuration is not an object".into(),
        ));
    }
    if applied
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApplyError::BadRequest(
            "metadata.managedFields must be nil".into(),
        ));
    }
    let ctx = Ctx::root(schema);
    let mut entries = decode(live);
    let live_clean = live
        .map(without_managed_fields)
        .unwrap_or_else(walk::empty_object);
    let config = without_managed_fields(applied);
    let config_set = walk::field_set(&config, &ctx).difference(unowned());

    let me = Entry {
        manager: manager.to_string(),
        operation: "Apply".into(),
        api_version: applied
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        time: Some(now_rfc3339.to_string()),
        subresource: String::new(),
        set: config_set.clone(),
    };
    let previous = entries
        .iter()
        .position(|e| e.same_identity(&me))
        .map(|i| entries.remove(i));

    let mut merged =
        walk::merge(Some(&live_clean), &config, &ctx).unwrap_or_else(walk::empty_object);

    if let Some(prev) = &previous {
        let others = entries
            .iter()
            .fold(FieldSet::new(), |acc, e| acc.union(&e.set));
        let keep = config_set.union(&others);
        for path in prev.set.difference(&config_set).paths() {
            if keep.touches(&path.0) {
                continue;
            }
            walk::remove_path(&mut merged, &path.0, &ctx, &keep, &mut Vec::new());
        }
    }

    let cmp = walk::compare(&live_clean, &merged, &ctx, live.is_none());
    let changed = cmp.modified.union(&cmp.added);
    let mut conflicts = Vec::new();
    for e in &entries {
        for p in e.set.intersection(&changed).paths() {
            conflicts.push(Conflict {
                manager: e.manager.clone(),
                operation: e.operation.clone(),
                api_version: e.api_version.clone(),
                subresource: e.subresource.clone(),
                field_path: p.to_string(),
            });
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApplyError::Conflicts(conflicts));
    }
    for e in &mut entries {
        e.set = e.set.difference(&changed).difference(&cmp.removed);
    }

    let object_changed = merged != live_clean;
    let mut me = me;
    if let Some(prev) = previous {
        if !object_changed && prev.set == me.set {
            me.time = prev.time;
        }
    }
    entries.push(me);
    encode(&mut merged, entries);
    Ok(merged)
}

/// Records an ordinary write (create, update, patch; `operation` is `"Update"`) by `manager`:
/// the fields it changed become its own and are taken from every other manager, as upstream's
/// field manager does. `old` is `None` for a create. Returns `new` with `managedFields` set.
///
/// A `managedFields` list the client sent that differs from the live one replaces it (that is
/// how upstream lets clients reset ownership, e.g. with `[{}]`); an absent or empty list keeps
/// the live entries.
pub fn update_managed_fields(
    old: Option<&Value>,
    new: &Value,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
    schema: &dyn PatchSchema,
    now_rfc3339: &str,
) -> Value {
    let mut out = new.clone();
    update_managed_fields_in_place(
        old,
        &mut out,
        manager,
        operation,
        subresource,
        schema,
        now_rfc3339,
    );
    out
}

/// [`update_managed_fields`] on an object the caller owns: `new` gets its `managedFields` set
/// without being copied (a write's object is otherwise cloned once more just for this).
pub fn update_managed_fields_in_place(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    operation: &str,
    subresource: Option<&str>,
    schema: &dyn PatchSchema,
    now_rfc3339: &str,
) {
    let ctx = Ctx::root(schema);
    let sent = managed_fields(new).filter(|l| !l.is_empty());
    let mut entries = match sent {
        Some(list) if old.and_then(managed_fields) != Some(list) => decode(Some(new)),
        _ => decode(old),
    };
    let old_clean = old
        .map(without_managed_fields)
        .unwrap_or_else(walk::empty_object);
    if let Some(m) = new.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    let cmp = walk::compare(&old_clean, new, &ctx, old.is_none());
    let changed = cmp.modified.into_union(cmp.added);
    for e in &mut entries {
        e.set.remove_all(&changed);
        e.set.remove_all(&cmp.removed);
    }
    let mut mine = changed;
    mine.remove_all(unowned());
    if !mine.is_empty() {
        let me = Entry {
            manager: manager.to_string(),
            operation: operation.to_string(),
            api_version: new
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            time: Some(now_rfc3339.to_string()),
            subresource: subresource.unwrap_or("").to_string(),
            set: mine,
        };
        match entries.iter_mut().find(|e| e.same_identity(&me)) {
            Some(e) => {
                e.set = e.set.union(&me.set);
                e.time = me.time;
            }
            None => entries.push(me),
        }
    }
    encode(new, entries);
}

#[cfg(test)]
mod tests;
