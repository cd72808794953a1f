//! The generic REST registry: create, get, list, update, patch, delete, deletecollection and
//! watch for every stored resource, with upstream semantics (uids, timestamps, generations,
//! optimistic concurrency, finalizers and graceful deletion, dry-run, field validation,
//! managedFields). Per-kind behaviour comes from [`strategy`]; defaults and validation from the
//! `validation` crate; patch and apply logic from `apimachinery`.

pub mod allocator;
pub mod conversion;
pub mod fields;
pub mod namespaces;
mod pod;
pub mod strategy;
pub mod watch;

use crate::codec::{self, meta_mut, meta_str, name_of};
use crate::request::Target;
use crate::resources::{self, Resource};
use apimachinery::errors::{ApiError, FieldError, GroupResource, Reason};
use apimachinery::patch::PatchSchema;
use apimachinery::selectors::{FieldSelector, LabelSelector};
use base64::Engine;
use rand::Rng;
use serde_json::{json, Value};
use std::sync::Arc;
use storage::{KeyValue, ListOptions, Storage};
use strategy::Scope;

/// `fieldValidation` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Ignore,
    Warn,
    Strict,
}

/// Options common to every write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: String,
    pub field_validation: FieldValidation,
}

/// The outcome of a write: the object and the warnings to send as `Warning` headers.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub created: bool,
    pub warnings: Vec<String>,
    /// `object` as stored, with its resourceVersion to splice in, when the client's version is
    /// the storage version: the response is written from these bytes instead of encoding
    /// `object` a second time.
    pub stored: Option<codec::Encoded>,
}

/// How one attempt of a read-modify-write ended.
enum Attempt<T> {
    /// The store took the write.
    Written(T),
    /// The answer needs no write (a no-op, a dry run).
    Unwritten(T),
    /// Someone else wrote first: read again and retry.
    Conflict,
}

impl<T> Attempt<T> {
    /// The answer of a read-modify-write loop after one attempt, or None to try again: after a
    /// conflict, and when an answer that is not a write (an error included) was decided on a
    /// cached copy that may be stale, to decide it again on a fresh read.
    fn settle(outcome: Result<Self, ApiError>, from_cache: bool) -> Option<Result<T, ApiError>> {
        match outcome {
            Ok(Attempt::Written(w)) => Some(Ok(w)),
            Ok(Attempt::Conflict) => None,
            _ if from_cache => None,
            Ok(Attempt::Unwritten(w)) => Some(Ok(w)),
            Err(e) => Some(Err(e)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: Option<&str>) -> Result<Self, ApiError> {
        let media = ct.unwrap_or("").split(';').next().unwrap_or("").trim();
        match media {
            "application/json-patch+json" => Ok(Self::Json),
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            other => Err(ApiError::new(
                Reason::UnsupportedMediaType,
                format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"),
            )),
        }
    }
}

/// List options from the query string, already parsed and checked.
#[derive(Debug, Default)]
pub struct ListParams {
    pub label: Option<LabelSelector>,
    pub field: Option<FieldSelector>,
    pub limit: usize,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// A finished list: encoded items (with resourceVersion), the list revision and paging state.
pub struct ListOutput {
    pub items: Vec<codec::Encoded>,
    pub revision: i64,
    pub continue_token: Option<String>,
    pub remaining: Option<i64>,
}

/// What a DELETE did.
pub enum Deleted {
    /// Removed from storage; the last state.
    Gone(Value),
    /// Marked for deletion (finalizers or grace period pending); the updated object.
    Pending(Value),
}

pub struct Registry {
    pub store: Arc<dyn Storage>,
    pub alloc: allocator::Allocators,
    pub namespaces: Arc<namespaces::NamespaceCache>,
}

/// Five characters from upstream's generateName alphabet (no vowels, no confusable digits).
pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn storage_err(gr: GroupResource<'_>, name: &str, e: storage::Error) -> ApiError {
    match e {
        storage::Error::AlreadyExists(_) => ApiError::already_exists(gr, name),
        storage::Error::NotFound(_) => ApiError::not_found(gr, name),
        storage::Error::Conflict { .. } => ApiError::stale_resource_version(gr, name),
        storage::Error::Expired { requested, oldest } => {
            ApiError::too_old_resource_version(requested, oldest)
        }
        storage::Error::Unavailable(m) => ApiError::new(Reason::ServiceUnavailable, m),
        storage::Error::Internal(m) => ApiError::internal(m),
    }
}

/// The schema used for strategic merge and apply of a kind at a version.
pub fn schema_for(r: &Resource, version: &str) -> Box<dyn PatchSchema> {
    match openapi::OpenApi::global().kind_schema(r.group, version, r.kind) {
        Some(s) => Box::new(s),
        None => Box::new(apimachinery::patch::NoSchema),
    }
}

impl Registry {
    pub fn new(store: Arc<dyn Storage>, alloc: allocator::Allocators) -> Self {
        Self {
            store,
            alloc,
            namespaces: Default::default(),
        }
    }

    fn key(&self, t: &Target, name: &str) -> String {
        t.resource.key(t.namespace.as_deref(), name)
    }

    /// Decode a stored value into the version the client asked for.
    fn decode(&self, t: &Target, kv: &KeyValue) -> Result<Value, ApiError> {
        let v = codec::decode_stored(&kv.value, kv.mod_revision)?;
        Ok(if conversion::needs_conversion(t.resource, &t.version) {
            conversion::from_storage(t.resource, &t.version, v)
        } else {
            v
        })
    }

    /// Encode a stored value for the client, splicing the resourceVersion when no conversion is needed.
    pub fn encode_kv(&self, t: &Target, kv: &KeyValue) -> Result<Vec<u8>, ApiError> {
        Ok(self.encoded(t, kv)?.into_vec())
    }

    fn encoded(&self, t: &Target, kv: &KeyValue) -> Result<codec::Encoded, ApiError> {
        if conversion::needs_conversion(t.resource, &t.version) {
            Ok(codec::Encoded::Plain(
                serde_json::to_vec(&self.decode(t, kv)?).unwrap_or_default(),
            ))
        } else {
            Ok(codec::Encoded::stored(kv.value.clone(), kv.mod_revision))
        }
    }

    /// Checks shared by create and update on the incoming object: apiVersion/kind and
    /// namespace agree with the URL.
    fn check_identity(&self, t: &Target, obj: &mut Value) -> Result<(), ApiError> {
        let want_av = t.api_version();
        match obj.get("apiVersion").and_then(Value::as_str) {
            Some(av) if !av.is_empty() && av != want_av => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({want_av})"
                )))
            }
            _ => obj["apiVersion"] = json!(want_av),
        }
        match obj.get("kind").and_then(Value::as_str) {
            Some(k) if !k.is_empty() && k != t.resource.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    t.resource.kind
                )))
            }
            _ => obj["kind"] = json!(t.resource.kind),
        }
        if !obj.get("metadata").is_none_or(Value::is_object) {
            return Err(ApiError::bad_request("metadata must be an object"));
        }
        let body_ns = meta_str(obj, "namespace").unwrap_or("").to_string();
        if t.resource.namespaced {
            let url_ns = t.namespace.clone().unwrap_or_default();
            if !body_ns.is_empty() && body_ns != url_ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            if let Some(m) = meta_mut(obj) {
                m.insert("namespace".into(), json!(url_ns));
            }
        } else if let Some(m) = meta_mut(obj) {
            m.remove("namespace");
        }
        Ok(())
    }

    /// Unknown-field checking per `fieldValidation`; returns warnings. Unknown fields are
    /// dropped from `obj` in every mode, as upstream's decoding into typed structs drops them.
    fn check_fields(
        &self,
        t: &Target,
        obj: &mut Value,
        fv: FieldValidation,
    ) -> Result<Vec<String>, ApiError> {
        let oa = openapi::OpenApi::global();
        let Some(schema) = oa.kind_schema(t.resource.group, &t.version, t.resource.kind) else {
            return Ok(vec![]);
        };
        let unknown = oa.unknown_fields(&schema, obj);
        if unknown.is_empty() {
            return Ok(vec![]);
        }
        for path in &unknown {
            drop_field(obj, path.trim_start_matches('.'));
        }
        if fv == FieldValidation::Ignore {
            return Ok(vec![]);
        }
        match fv {
            FieldValidation::Strict => {
                let list = unknown
                    .iter()
                    .map(|f| format!("unknown field \"{}\"", f.trim_start_matches('.')))
                    .collect::<Vec<_>>();
                Err(ApiError::bad_request(format!(
                    "strict decoding error: {}",
                    list.join(", ")
                )))
            }
            _ => Ok(unknown
                .iter()
                .map(|f| format!("unknown field \"{}\"", f.trim_start_matches('.')))
                .collect()),
        }
    }

    /// Defaults and validation, in the served version.
    fn default_and_validate(
        &self,
        t: &Target,
        obj: &mut Value,
        old: Option<&Value>,
        scope: Scope,
    ) -> Result<(), ApiError> {
        let r = t.resource;
        validation::default_object(r.group, &t.version, r.kind, obj);
        let errs = match (scope, old) {
            (Scope::Status, Some(old)) => {
                validation::validate_status_update(r.group, &t.version, r.kind, obj, old)
            }
            _ => validation::validate(r.group, &t.version, r.kind, obj, old),
        };
        if errs.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid(r.kind, r.group, name_of(obj), &errs))
        }
    }

    async fn check_namespace(&self, t: &Target, name: &str) -> Result<(), ApiError> {
        let Some(ns) = t.namespace.as_deref().filter(|_| t.resource.namespaced) else {
            return Ok(());
        };
        if self.namespaces.is_active(ns) {
            return Ok(());
        }
        let nsr = resources::by_kind("", "Namespace").expect("namespaces are served");
        let kv = self
            .store
            .get(&nsr.key(None, ns))
            .await
            .map_err(|e| storage_err(nsr.group_resource(), ns, e))?;
        match kv {
            None => Err(ApiError::not_found(nsr.group_resource(), ns)),
            Some(kv) => {
                let v: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
                if namespaces::is_terminating(&v) {
                    let mut details = json!({"name": name, "kind": t.resource.plural, "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]});
                    if !t.resource.group.is_empty() {
                        details["group"] = json!(t.resource.group);
                    }
                    Err(ApiError::forbidden(t.resource.group_resource(), name, &format!("unable to create new content in namespace {ns} because it is being terminated")).with_details(details))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Resolve `priorityClassName` to a priority (upstream's Priority admission).
    async fn admit_pod_priority(&self, obj: &mut Value) -> Result<(), ApiError> {
        let Some(pc) = obj
            .pointer("/spec/priorityClassName")
            .and_then(Value::as_str)
            .map(String::from)
        else {
            return Ok(());
        };
        if pc.is_empty() || pc.starts_with("system-") {
            return Ok(());
        }
        let pcr = resources::by_kind("scheduling.k8s.io", "PriorityClass").expect("served");
        let kv = self
            .store
            .get(&pcr.key(None, &pc))
            .await
            .map_err(|e| storage_err(pcr.group_resource(), &pc, e))?;
        match kv {
            Some(kv) => {
                let v: Value = serde_json::from_slice(&kv.value).unwrap_or_default();
                obj["spec"]["priority"] = v.get("value").cloned().unwrap_or(json!(0));
                if let Some(p) = v.get("preemptionPolicy") {
                    obj["spec"]["preemptionPolicy"] = p.clone();
                }
                Ok(())
            }
            None => Err(ApiError::forbidden(
                GroupResource {
                    group: "",
                    resource: "pods",
                },
                name_of(obj),
                &format!("no PriorityClass with name {pc} was found"),
            )),
        }
    }

    fn managed_update(
        &self,
        t: &Target,
        old: Option<&Value>,
        new: &mut Value,
        manager: &str,
        scope: Scope,
    ) {
        let schema = schema_for(t.resource, &t.version);
        let sub = (scope == Scope::Status).then_some("status");
        apimachinery::apply::update_managed_fields_in_place(
            old,
            new,
            manager,
            "Update",
            sub,
            schema.as_ref(),
            &codec::now_rfc3339(),
        );
    }

    // ---------------------------------------------------------------- create

    pub async fn create(
        &self,
        t: &Target,
        mut obj: Value,
        o: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let r = t.resource;
        self.check_identity(t, &mut obj)?;
        let warnings = self.check_fields(t, &mut obj, o.field_validation)?;
        let now = codec::now_rfc3339();
        {
            let m = meta_mut(&mut obj).expect("object");
            let name = m
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if name.is_empty() {
                match m
                    .get("generateName")
                    .and_then(Value::as_str)
                    .filter(|g| !g.is_empty())
                {
                    Some(g) => {
                        let n = format!("{g}{}", random_suffix());
                        m.insert("name".into(), json!(n));
                    }
                    None => {
                        return Err(ApiError::invalid(
                            r.kind,
                            r.group,
                            "",
                            &[FieldError::required(
                                "metadata.name",
                                "name or generateName is required",
                            )],
                        ))
                    }
                }
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now));
            for k in [
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "resourceVersion",
                "selfLink",
                "managedFields",
            ] {
                m.remove(k);
            }
            if strategy::tracks_generation(r) {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        strategy::prepare_for_create(r, &mut obj);
        self.default_and_validate(t, &mut obj, None, Scope::Main)?;
        self.managed_update(t, None, &mut obj, &o.field_manager, Scope::Main);
        self.store_new(t, obj, o, warnings).await
    }

    /// The tail of every create (also apply-creates): admission, allocation, storage.
    async fn store_new(
        &self,
        t: &Target,
        mut obj: Value,
        o: &WriteOptions,
        warnings: Vec<String>,
    ) -> Result<Written, ApiError> {
        let r = t.resource;
        let name = name_of(&obj).to_string();
        self.check_namespace(t, &name).await?;
        if r.group.is_empty() && r.kind == "Pod" {
            self.admit_pod_priority(&mut obj).await?;
        }
        let alloc = if r.group.is_empty() && r.kind == "Service" {
            if o.dry_run {
                None
            } else {
                Some(
                    self.alloc
                        .allocate(&mut obj, None)
                        .map_err(|errs| ApiError::invalid(r.kind, r.group, &name, &errs))?,
                )
            }
        } else {
            None
        };
        if o.dry_run {
            return Ok(Written {
                object: obj,
                created: true,
                warnings,
                stored: None,
            });
        }
        let converted = conversion::needs_conversion(r, &t.version);
        let value = if converted {
            codec::encode_for_storage(&conversion::to_storage(r, &t.version, obj.clone()))
        } else {
            codec::encode_for_storage(&obj)
        };
        let stored = (!converted).then(|| value.clone());
        match self.store.create(&self.key(t, &name), value).await {
            Ok(rev) => {
                if let Some(a) = alloc {
                    a.commit();
                }
                if r.group.is_empty() && r.kind == "Namespace" {
                    self.namespaces.set(&name, namespaces::is_terminating(&obj));
                }
                codec::set_rv(&mut obj, rev);
                Ok(Written {
                    object: obj,
                    created: true,
                    warnings,
                    stored: stored.map(|v| codec::Encoded::stored(v, rev)),
                })
            }
            Err(e) => {
                if let Some(a) = alloc {
                    a.rollback();
                }
                Err(storage_err(r.group_resource(), &name, e))
            }
        }
    }

    // ---------------------------------------------------------------- read

    pub async fn get_kv(&self, t: &Target, name: &str) -> Result<KeyValue, ApiError> {
        let gr = t.resource.group_resource();
        self.store
            .get(&self.key(t, name))
            .await
            .map_err(|e| storage_err(gr, name, e))?
            .ok_or_else(|| ApiError::not_found(gr, name))
    }

    pub async fn get(&self, t: &Target, name: &str) -> Result<Value, ApiError> {
        let kv = self.get_kv(t, name).await?;
        self.decode(t, &kv)
    }

    /// Whether an object passes the selectors.
    pub fn matches(&self, r: &Resource, obj: &Value, p: &ListParams) -> bool {
        if let Some(l) = &p.label {
            if !l.matches(codec::labels_of(obj)) {
                return false;
            }
        }
        if let Some(f) = &p.field {
            if !f.matches(|field| fields::field_value(r, obj, field)) {
                return false;
            }
        }
        true
    }

    pub async fn list(&self, t: &Target, p: &ListParams) -> Result<ListOutput, ApiError> {
        let r = t.resource;
        let prefix = r.key_prefix(t.namespace.as_deref());
        let (mut start_after, mut revision) = (None, 0i64);
        if let Some(tok) = &p.continue_token {
            let (rv, start) = decode_continue(tok, &prefix)?;
            start_after = Some(start);
            revision = rv;
        } else if let (Some(rv), Some("Exact")) =
            (&p.resource_version, p.resource_version_match.as_deref())
        {
            revision = codec::parse_rv(rv)?;
        } else if let (Some(rv), Some("NotOlderThan")) =
            (&p.resource_version, p.resource_version_match.as_deref())
        {
            let want = codec::parse_rv(rv)?;
            let cur = self
                .store
                .current_revision()
                .await
                .map_err(|e| storage_err(r.group_resource(), "", e))?;
            if want > cur {
                return Err(ApiError::new(Reason::Timeout, format!("Too large resource version: {want}, current: {cur}"))
                    .with_details(json!({"causes":[{"reason":"ResourceVersionTooLarge","message":"Too large resource version"}],"retryAfterSeconds":1})));
            }
        }
        let filtering = p.label.as_ref().is_some_and(|l| !l.is_empty()) || p.field.is_some();
        let mut items = Vec::new();
        let mut last_key: Option<String> = None;
        let mut more = false;
        let mut list_rev;
        // Keys after the last returned item, for `remainingItemCount`.
        let mut remaining_after: i64;
        loop {
            let chunk = if p.limit == 0 {
                0
            } else if filtering {
                (p.limit * 2).max(64)
            } else {
                p.limit + 1
            };
            let opts = ListOptions {
                start_after: start_after.clone(),
                limit: chunk,
                revision,
            };
            let res = match self.store.list(&prefix, &opts).await {
                Ok(res) => res,
                // The embedded store keeps no history: continue on the latest state.
                Err(storage::Error::Expired { .. })
                    if p.continue_token.is_some() && revision > 0 =>
                {
                    revision = 0;
                    continue;
                }
                Err(e) => {
                    if let storage::Error::Expired { .. } = e {
                        if p.continue_token.is_some() {
                            return Err(ApiError::new(Reason::Expired, "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."));
                        }
                    }
                    return Err(storage_err(r.group_resource(), "", e));
                }
            };
            list_rev = res.revision;
            revision = res.revision;
            let n = res.items.len();
            let mut seen = 0usize;
            for kv in res.items.iter() {
                if p.limit > 0 && items.len() == p.limit {
                    more = true;
                    break;
                }
                seen += 1;
                if filtering {
                    let obj = self.decode(t, kv)?;
                    if !self.matches(r, &obj, p) {
                        continue;
                    }
                    // A match is sent as stored (resourceVersion spliced in), not re-encoded.
                    items.push(if conversion::needs_conversion(r, &t.version) {
                        codec::Encoded::Plain(serde_json::to_vec(&obj).unwrap_or_default())
                    } else {
                        codec::Encoded::stored(kv.value.clone(), kv.mod_revision)
                    });
                } else {
                    items.push(self.encoded(t, kv)?);
                }
            }
            // The last key looked at, cloned once per chunk rather than once per item.
            if let Some(kv) = seen.checked_sub(1).map(|i| &res.items[i]) {
                last_key = Some(kv.key.clone());
            }
            remaining_after = (n - seen) as i64 + res.remaining as i64;
            if more || chunk == 0 || n < chunk && res.remaining == 0 {
                if !more && res.remaining > 0 {
                    more = true;
                }
                break;
            }
            if p.limit > 0 && items.len() == p.limit {
                more = res.remaining > 0
                    || n > 0 && last_key.as_deref() != res.items.last().map(|k| k.key.as_str());
                break;
            }
            start_after = last_key.clone();
        }
        let continue_token = if more {
            last_key.map(|k| encode_continue(list_rev, &k, &prefix))
        } else {
            None
        };
        // Upstream counts the rest only when nothing is filtered out.
        let remaining = (continue_token.is_some() && !filtering && remaining_after > 0)
            .then_some(remaining_after);
        Ok(ListOutput {
            items,
            revision: list_rev,
            continue_token,
            remaining,
        })
    }

    // ---------------------------------------------------------------- update / patch

    /// The object a read-modify-write attempt starts from, and whether it is the watch
    /// cache's copy (`cached`, taken on the first attempt only) rather than a fresh read.
    async fn read_for_write(
        &self,
        key: &str,
        cached: &mut Option<KeyValue>,
        gr: GroupResource<'_>,
        name: &str,
    ) -> Result<(Option<KeyValue>, bool), ApiError> {
        if let Some(kv) = cached.take() {
            return Ok((Some(kv), true));
        }
        let fresh = self
            .store
            .get(key)
            .await
            .map_err(|e| storage_err(gr, name, e))?;
        Ok((fresh, false))
    }

    /// Read-modify-write of one object. `mutate` gets the current object (None if absent) and
    /// returns the desired object; an explicit `metadata.resourceVersion` in it is a precondition.
    async fn update_with<F>(
        &self,
        t: &Target,
        name: &str,
        scope: Scope,
        o: &WriteOptions,
        apply: bool,
        mutate: F,
    ) -> Result<Written, ApiError>
    where
        F: Fn(Option<&Value>) -> Result<Value, ApiError>,
    {
        let r = t.resource;
        let gr = r.group_resource();
        let key = self.key(t, name);
        // Like upstream's cacher, the first attempt starts from the watch cache's copy (no
        // read from etcd); the write's revision precondition catches a stale copy, and any
        // answer that is not a write is decided again on a fresh read.
        let mut cached = self.store.cached(&key);
        for _attempt in 0..100_000 {
            let (cur, from_cache) = self.read_for_write(&key, &mut cached, gr, name).await?;
            let Some(cur) = cur else {
                let mut obj = mutate(None)?;
                if !(apply || scope == Scope::Main && strategy::allow_create_on_update(r)) {
                    return Err(ApiError::not_found(gr, name));
                }
                if let Some(m) = meta_mut(&mut obj) {
                    if m.get("resourceVersion")
                        .and_then(Value::as_str)
                        .is_some_and(|v| !v.is_empty())
                    {
                        return Err(ApiError::not_found(gr, name));
                    }
                    m.entry("name").or_insert(json!(name));
                }
                if apply {
                    return self.create_applied(t, obj, o).await;
                }
                return self.create(t, obj, o).await.map(|mut w| {
                    w.created = true;
                    w
                });
            };
            let attempt: Result<Attempt<Written>, ApiError> = async {
                let old = self.decode(t, &cur)?;
                let mut new = mutate(Some(&old))?;
                self.check_identity(t, &mut new)?;
                let warnings = self.check_fields(
                    t,
                    &mut new,
                    if apply {
                        FieldValidation::Ignore
                    } else {
                        o.field_validation
                    },
                )?;
                if name_of(&new) != name {
                    if name_of(&new).is_empty() {
                        meta_mut(&mut new)
                            .expect("object")
                            .insert("name".into(), json!(name));
                    } else {
                        return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        name_of(&new)
                    )));
                    }
                }
                let precondition = meta_str(&new, "resourceVersion")
                    .filter(|v| !v.is_empty())
                    .map(String::from);
                if let Some(rv) = &precondition {
                    if codec::parse_rv(rv)? != cur.mod_revision {
                        return Err(ApiError::stale_resource_version(gr, name));
                    }
                }
                if let Some(uid) = meta_str(&new, "uid").filter(|u| !u.is_empty()) {
                    if Some(uid) != meta_str(&old, "uid") {
                        return Err(ApiError::conflict(
                            gr,
                            name,
                            &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&old, "uid").unwrap_or("")
                    ),
                        ));
                    }
                }
                // Fields only the server sets.
                {
                    let om = old.get("metadata").cloned().unwrap_or_default();
                    let m = meta_mut(&mut new).expect("object");
                    for k in [
                        "uid",
                        "creationTimestamp",
                        "deletionTimestamp",
                        "deletionGracePeriodSeconds",
                        "generation",
                    ] {
                        match om.get(k) {
                            Some(v) => m.insert(k.into(), v.clone()),
                            None => m.remove(k),
                        };
                    }
                    m.remove("resourceVersion");
                    if apply || !m.contains_key("managedFields") {
                        if let Some(mf) = om.get("managedFields") {
                            if !apply {
                                m.insert("managedFields".into(), mf.clone());
                            }
                        }
                    }
                }
                strategy::prepare_for_update(r, scope, &mut new, &old);
                if scope == Scope::Status {
                    self.check_fields(t, &mut new, FieldValidation::Ignore)?;
                }
                if strategy::tracks_generation(r) && spec_changed(&old, &new) {
                    let g = old
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(0)
                        + 1;
                    meta_mut(&mut new)
                        .expect("object")
                        .insert("generation".into(), json!(g));
                }
                self.default_and_validate(t, &mut new, Some(&old), scope)?;
                if !apply {
                    self.managed_update(t, Some(&old), &mut new, &o.field_manager, scope);
                }
                // Deletion completes when the last finalizer goes.
                let finalized = new.pointer("/metadata/deletionTimestamp").is_some()
                    && new
                        .pointer("/metadata/finalizers")
                        .and_then(Value::as_array)
                        .is_none_or(|f| f.is_empty())
                    && !(r.kind == "Pod"
                        && r.group.is_empty()
                        && new
                            .pointer("/metadata/deletionGracePeriodSeconds")
                            .and_then(Value::as_i64)
                            .unwrap_or(0)
                            > 0)
                    && !(r.kind == "Namespace"
                        && r.group.is_empty()
                        && new
                            .pointer("/spec/finalizers")
                            .and_then(Value::as_array)
                            .is_some_and(|f| !f.is_empty()));
                let mut old_cmp = old.clone();
                if let Some(m) = meta_mut(&mut old_cmp) {
                    m.remove("resourceVersion");
                }
                if !finalized && strip_mf_times(&old_cmp) == strip_mf_times(&new) {
                    // No-op: upstream does not write (and the resourceVersion stays).
                    return Ok(Attempt::Unwritten(Written {
                        object: old,
                        created: false,
                        warnings,
                        stored: None,
                    }));
                }
                let alloc = if r.group.is_empty()
                    && r.kind == "Service"
                    && scope == Scope::Main
                    && !o.dry_run
                {
                    Some(
                        self.alloc
                            .allocate(&mut new, Some(&old))
                            .map_err(|errs| ApiError::invalid(r.kind, r.group, name, &errs))?,
                    )
                } else {
                    None
                };
                if o.dry_run {
                    if let Some(a) = alloc {
                        a.rollback();
                    }
                    codec::set_rv(&mut new, cur.mod_revision);
                    return Ok(Attempt::Unwritten(Written {
                        object: new,
                        created: false,
                        warnings,
                        stored: None,
                    }));
                }
                if finalized {
                    if let Some(a) = alloc {
                        a.rollback();
                    }
                    return match self.store.delete(&key, Some(cur.mod_revision)).await {
                        Ok((_, rev)) => {
                            if r.group.is_empty() && r.kind == "Service" {
                                self.alloc.release(&old);
                            }
                            if r.group.is_empty() && r.kind == "Namespace" {
                                self.namespaces.remove(name);
                            }
                            codec::set_rv(&mut new, rev);
                            Ok(Attempt::Written(Written {
                                object: new,
                                created: false,
                                warnings,
                                stored: None,
                            }))
                        }
                        Err(storage::Error::Conflict { .. }) if precondition.is_none() => {
                            Ok(Attempt::Conflict)
                        }
                        Err(e) => Err(storage_err(gr, name, e)),
                    };
                }
                let converted = conversion::needs_conversion(r, &t.version);
                let value = if converted {
                    codec::encode_for_storage(&conversion::to_storage(r, &t.version, new.clone()))
                } else {
                    codec::encode_for_storage(&new)
                };
                let stored = (!converted).then(|| value.clone());
                match self.store.update(&key, value, cur.mod_revision).await {
                    Ok(rev) => {
                        if let Some(a) = alloc {
                            a.commit();
                        }
                        codec::set_rv(&mut new, rev);
                        Ok(Attempt::Written(Written {
                            object: new,
                            created: false,
                            warnings,
                            stored: stored.map(|v| codec::Encoded::stored(v, rev)),
                        }))
                    }
                    Err(storage::Error::Conflict { .. }) if precondition.is_none() => {
                        if let Some(a) = alloc {
                            a.rollback();
                        }
                        Ok(Attempt::Conflict)
                    }
                    Err(e) => {
                        if let Some(a) = alloc {
                            a.rollback();
                        }
                        Err(storage_err(gr, name, e))
                    }
                }
            }
            .await;
            if let Some(answer) = Attempt::settle(attempt, from_cache) {
                return answer;
            }
        }
        Err(ApiError::conflict(
            gr,
            name,
            "too many concurrent updates; please retry",
        ))
    }

    pub async fn update(
        &self,
        t: &Target,
        name: &str,
        body: Value,
        o: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let scope = if t.subresource.as_deref() == Some("status") {
            Scope::Status
        } else {
            Scope::Main
        };
        if !body.is_object() {
            return Err(ApiError::bad_request("the request body must be an object"));
        }
        self.update_with(t, name, scope, o, false, |_| Ok(body.clone()))
            .await
    }

    pub async fn patch(
        &self,
        t: &Target,
        name: &str,
        pt: PatchType,
        patch: &[u8],
        force: bool,
        o: &WriteOptions,
    ) -> Result<Written, ApiError> {
        let scope = if t.subresource.as_deref() == Some("status") {
            Scope::Status
        } else {
            Scope::Main
        };
        let r = t.resource;
        let patch_value: Value = match pt {
            PatchType::Apply => serde_yaml::from_slice(patch)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?,
            _ => serde_json::from_slice(patch)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
        };
        let schema = schema_for(r, &t.version);
        let manager = o.field_manager.clone();
        if pt == PatchType::Apply {
            if manager.is_empty() {
                return Err(ApiError::bad_request("PATCH requests of type application/apply-patch+yaml must include a fieldManager"));
            }
            let mut applied = patch_value.clone();
            self.check_identity(t, &mut applied)?;
            self.check_fields(t, &mut applied, o.field_validation)?;
        }
        let now = codec::now_rfc3339();
        self.update_with(t, name, scope, o, pt == PatchType::Apply, |old| {
            let res = match (pt, old) {
                (PatchType::Apply, old) => {
                    let mut applied = patch_value.clone();
                    if let Some(m) = meta_mut(&mut applied) {
                        m.entry("name").or_insert(json!(name));
                    }
                    apimachinery::apply::apply(
                        old,
                        &applied,
                        &manager,
                        force,
                        schema.as_ref(),
                        &now,
                    )
                    .map_err(|e| e.to_api_error())
                }
                (_, None) => Err(ApiError::not_found(r.group_resource(), name)),
                (PatchType::Json, Some(old)) => {
                    apimachinery::patch::json_patch(old, &patch_value).map_err(patch_err)
                }
                (PatchType::Merge, Some(old)) => {
                    apimachinery::patch::merge_patch(old, &patch_value).map_err(patch_err)
                }
                (PatchType::Strategic, Some(old)) => {
                    apimachinery::patch::strategic_merge_patch(old, &patch_value, schema.as_ref())
                        .map_err(patch_err)
                }
            }?;
            let mut res = res;
            // A patch that doesn't set a resourceVersion isn't conditional.
            let patch_rv = patch_value
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from);
            if let Some(m) = meta_mut(&mut res) {
                match patch_rv {
                    Some(rv) if pt != PatchType::Apply => {
                        m.insert("resourceVersion".into(), json!(rv))
                    }
                    _ => m.remove("resourceVersion"),
                };
            }
            Ok(res)
        })
        .await
    }

    async fn create_applied(
        &self,
        t: &Target,
        obj: Value,
        o: &WriteOptions,
    ) -> Result<Written, ApiError> {
        // `obj` already carries the applier's managedFields.
        let mut obj = obj;
        let r = t.resource;
        let mf = obj.pointer("/metadata/managedFields").cloned();
        let now = codec::now_rfc3339();
        {
            let m = meta_mut(&mut obj).expect("object");
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(now));
            for k in [
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "resourceVersion",
            ] {
                m.remove(k);
            }
            if strategy::tracks_generation(r) {
                m.insert("generation".into(), json!(1));
            }
        }
        strategy::prepare_for_create(r, &mut obj);
        self.default_and_validate(t, &mut obj, None, Scope::Main)?;
        if let (Some(mf), Some(m)) = (mf, meta_mut(&mut obj)) {
            m.insert("managedFields".into(), mf);
        }
        self.store_new(t, obj, o, vec![]).await
    }

    /// `autoscaling/v1 Scale` read of a scalable resource.
    pub async fn get_scale(&self, t: &Target, name: &str) -> Result<Value, ApiError> {
        Ok(strategy::to_scale(&self.get(t, name).await?))
    }

    /// Update or patch of `/scale`: `mutate` turns the current Scale into the desired one.
    pub async fn update_scale<F>(
        &self,
        t: &Target,
        name: &str,
        o: &WriteOptions,
        mutate: F,
    ) -> Result<Value, ApiError>
    where
        F: Fn(&Value) -> Result<Value, ApiError>,
    {
        let main = Target {
            subresource: None,
            ..t.clone()
        };
        let w = self
            .update_with(&main, name, Scope::Main, o, false, |old| {
                let old =
                    old.ok_or_else(|| ApiError::not_found(t.resource.group_resource(), name))?;
                let scale = mutate(&strategy::to_scale(old))?;
                let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
                if replicas.as_i64().is_none_or(|r| r < 0) {
                    return Err(ApiError::invalid(
                        "Scale",
                        "autoscaling",
                        name,
                        &[FieldError::invalid(
                            "spec.replicas",
                            replicas,
                            "must be greater than or equal to 0",
                        )],
                    ));
                }
                let mut new = old.clone();
                new["spec"]["replicas"] = replicas;
                let rv = scale
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty());
                if let Some(m) = meta_mut(&mut new) {
                    match rv {
                        Some(rv) => m.insert("resourceVersion".into(), json!(rv)),
                        None => m.remove("resourceVersion"),
                    };
                }
                Ok(new)
            })
            .await?;
        Ok(strategy::to_scale(&w.object))
    }

    // ---------------------------------------------------------------- delete

    pub async fn delete(
        &self,
        t: &Target,
        name: &str,
        opts: &Value,
        dry_run: bool,
    ) -> Result<Deleted, ApiError> {
        let r = t.resource;
        let gr = r.group_resource();
        let key = self.key(t, name);
        let grace_req = opts.get("gracePeriodSeconds").and_then(Value::as_i64);
        let policy = match opts.get("propagationPolicy").and_then(Value::as_str) {
            Some(p @ ("Orphan" | "Background" | "Foreground")) => Some(p.to_string()),
            Some(other) => {
                return Err(ApiError::invalid(
                    "DeleteOptions",
                    "",
                    "",
                    &[FieldError::not_supported(
                        "propagationPolicy",
                        json!(other),
                        &["Foreground", "Background", "Orphan", "nil"],
                    )],
                ))
            }
            None => match opts.get("orphanDependents").and_then(Value::as_bool) {
                Some(true) => Some("Orphan".into()),
                Some(false) => Some("Background".into()),
                None => None,
            },
        };
        // As in update_with: start from the watch cache's copy; an answer that is not a write
        // (a failed precondition, a deletion already in progress, a dry run) is decided again
        // on a fresh read.
        let mut cached = self.store.cached(&key);
        for _ in 0..100_000 {
            let (cur, from_cache) = self.read_for_write(&key, &mut cached, gr, name).await?;
            let cur = cur.ok_or_else(|| ApiError::not_found(gr, name))?;
            let attempt: Result<Attempt<Deleted>, ApiError> = async {
            let old = self.decode(t, &cur)?;
            if let Some(uid) = opts.pointer("/preconditions/uid").and_then(Value::as_str) {
                if Some(uid) != meta_str(&old, "uid") {
                    return Err(ApiError::conflict(
                        gr,
                        name,
                        &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&old, "uid").unwrap_or("")
                    ),
                    ));
                }
            }
            if let Some(rv) = opts
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
            {
                if codec::parse_rv(rv)? != cur.mod_revision {
                    return Err(ApiError::conflict(gr, name, &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        cur.mod_revision
                    )));
                }
            }
            let mut new = old.clone();
            let mut finalizers: Vec<Value> = new
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let already = old.pointer("/metadata/deletionTimestamp").is_some();
            match policy.as_deref() {
                Some("Orphan") if !finalizers.contains(&json!("orphan")) => {
                    finalizers.retain(|f| f != "foregroundDeletion");
                    finalizers.push(json!("orphan"));
                }
                Some("Foreground") if !finalizers.contains(&json!("foregroundDeletion")) => {
                    finalizers.retain(|f| f != "orphan");
                    finalizers.push(json!("foregroundDeletion"));
                }
                _ => {}
            }
            let grace = strategy::grace_period(r, &old, grace_req);
            let ns_pending = r.group.is_empty()
                && r.kind == "Namespace"
                && old
                    .pointer("/spec/finalizers")
                    .and_then(Value::as_array)
                    .is_some_and(|f| !f.is_empty());
            let pending = !finalizers.is_empty() || grace > 0 || ns_pending;
            if pending {
                let finalizers_unchanged = old
                    .pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
                    == finalizers;
                let m = meta_mut(&mut new).expect("object");
                if !finalizers.is_empty() {
                    m.insert("finalizers".into(), Value::Array(finalizers));
                }
                let prev_grace = old
                    .pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_i64);
                if already && prev_grace.is_none_or(|p| grace >= p) && finalizers_unchanged {
                    // Nothing more to do: deletion already in progress.
                    return Ok(Attempt::Unwritten(Deleted::Pending(old)));
                }
                let when = chrono::Utc::now() + chrono::Duration::seconds(grace);
                if !already || prev_grace.is_some_and(|p| grace < p) {
                    m.insert(
                        "deletionTimestamp".into(),
                        json!(when.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
                    );
                    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                }
                if r.kind == "Namespace" && r.group.is_empty() {
                    new["status"]["phase"] = json!("Terminating");
                }
                if dry_run {
                    return Ok(Attempt::Unwritten(Deleted::Pending(new)));
                }
                m_remove_rv(&mut new);
                return match self
                    .store
                    .update(&key, codec::encode_for_storage(&new), cur.mod_revision)
                    .await
                {
                    Ok(rev) => {
                        if r.group.is_empty() && r.kind == "Namespace" {
                            self.namespaces.set(name, true);
                        }
                        codec::set_rv(&mut new, rev);
                        Ok(Attempt::Written(Deleted::Pending(new)))
                    }
                    Err(storage::Error::Conflict { .. }) => Ok(Attempt::Conflict),
                    Err(e) => Err(storage_err(gr, name, e)),
                };
            }
            if dry_run {
                return Ok(Attempt::Unwritten(Deleted::Gone(old)));
            }
            match self.store.delete(&key, Some(cur.mod_revision)).await {
                Ok((_, _rev)) => {
                    if r.group.is_empty() && r.kind == "Service" {
                        self.alloc.release(&old);
                    }
                    Ok(Attempt::Written(Deleted::Gone(old)))
                }
                Err(storage::Error::Conflict { .. }) => Ok(Attempt::Conflict),
                Err(storage::Error::NotFound(_)) => Err(ApiError::not_found(gr, name)),
                Err(e) => Err(storage_err(gr, name, e)),
            }
            }
            .await;
            if let Some(answer) = Attempt::settle(attempt, from_cache) {
                return answer;
            }
        }
        Err(ApiError::conflict(
            gr,
            name,
            "too many concurrent updates; please retry",
        ))
    }

    /// Delete every object matching the list options; returns the deleted (or pending) objects.
    pub async fn delete_collection(
        &self,
        t: &Target,
        p: &ListParams,
        opts: &Value,
        dry_run: bool,
    ) -> Result<Vec<Value>, ApiError> {
        let list = self
            .list(
                t,
                &ListParams {
                    limit: 0,
                    continue_token: None,
                    label: p.label.clone(),
                    field: p.field.clone(),
                    resource_version: None,
                    resource_version_match: None,
                },
            )
            .await?;
        let mut out = Vec::new();
        for item in list.items {
            let obj: Value = serde_json::from_slice(&item.into_vec()).unwrap_or_default();
            let name = name_of(&obj).to_string();
            let ns = meta_str(&obj, "namespace").map(String::from);
            let target = Target {
                namespace: ns.or_else(|| t.namespace.clone()),
                ..t.clone()
            };
            match self.delete(&target, &name, opts, dry_run).await {
                Ok(Deleted::Gone(v)) | Ok(Deleted::Pending(v)) => out.push(v),
                Err(e) if e.reason == Reason::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// Remove the field at a strict-decoding path (`spec.foo`, `spec.containers[0].bar`).
fn drop_field(obj: &mut Value, path: &str) {
    let mut segs: Vec<&str> = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        match rest.find('[') {
            Some(i) => {
                segs.push(&rest[..i]);
                rest = &rest[i..];
                while let Some(end) = rest.find(']') {
                    segs.push(&rest[1..end]);
                    rest = &rest[end + 1..];
                }
            }
            None => segs.push(rest),
        }
    }
    let Some((last, parents)) = segs.split_last() else {
        return;
    };
    let mut cur = obj;
    for s in parents {
        let next = match cur {
            Value::Array(a) => s.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            Value::Object(m) => m.get_mut(*s),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Value::Object(m) = cur {
        m.remove(*last);
    }
}

fn m_remove_rv(v: &mut Value) {
    if let Some(m) = meta_mut(v) {
        m.remove("resourceVersion");
    }
}

fn patch_err(e: apimachinery::patch::PatchError) -> ApiError {
    e.to_api_error()
}

/// Whether anything outside metadata and status changed (what bumps `generation`).
fn spec_changed(old: &Value, new: &Value) -> bool {
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return true;
    };
    let keys: std::collections::BTreeSet<&String> = o.keys().chain(n.keys()).collect();
    keys.into_iter()
        .filter(|k| !matches!(k.as_str(), "metadata" | "status" | "apiVersion" | "kind"))
        .any(|k| o.get(k) != n.get(k))
}

/// managedFields timestamps differ on every write; ignore them when deciding if a write is a no-op.
fn strip_mf_times(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(mf) = v
        .pointer_mut("/metadata/managedFields")
        .and_then(Value::as_array_mut)
    {
        for e in mf {
            if let Some(o) = e.as_object_mut() {
                o.remove("time");
            }
        }
    }
    v
}

/// Continue tokens: base64 of `{"v":"meta.k8s.io/v1","rv":N,"start":"<key after prefix>"}`, as upstream.
pub fn encode_continue(rv: i64, last_key: &str, prefix: &str) -> String {
    let start = last_key.strip_prefix(prefix).unwrap_or(last_key);
    let tok = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{start}\u{0}")});
    base64::engine::general_purpose::URL_SAFE.encode(serde_json::to_vec(&tok).unwrap_or_default())
}

fn decode_continue(tok: &str, prefix: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid: illegal base64 data or version");
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(tok)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(tok))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(tok))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if v.get("v").and_then(Value::as_str) != Some("meta.k8s.io/v1") {
        return Err(bad());
    }
    let rv = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    if start.contains("..") || start.starts_with('/') {
        return Err(ApiError::bad_request(
            "continue key is not valid: key path not valid",
        ));
    }
    // `start` names the first key to return; storage wants the last key already returned.
    let start = start.strip_suffix('\u{0}').unwrap_or(start);
    Ok((rv, format!("{prefix}{start}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_registry(store: Arc<dyn storage::Storage>) -> Registry {
        let alloc = allocator::Allocators::new(
            allocator::IpRange::parse("10.96.0.0/28").unwrap(),
            (30000, 30002),
        );
        Registry::new(store, alloc)
    }

    fn target(kind: &str, ns: Option<&str>) -> Target {
        Target {
            resource: resources::by_kind("", kind).unwrap(),
            version: "v1".into(),
            namespace: ns.map(str::to_string),
            name: None,
            subresource: None,
            subpath: None,
        }
    }

    fn test_options() -> WriteOptions {
        WriteOptions {
            dry_run: false,
            field_manager: "test".into(),
            field_validation: FieldValidation::Strict,
        }
    }

    #[tokio::test]
    async fn written_objects_answer_from_the_stored_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = storage::embedded::EmbeddedStore::open(dir.path()).unwrap();
        let reg = test_registry(Arc::new(store));
        let o = test_options();
        let same = |w: &Written| {
            let stored = w.stored.as_ref().expect("stored bytes");
            let v: Value = serde_json::from_slice(&stored.to_vec()).unwrap();
            assert_eq!(v, w.object);
            assert!(w.object.pointer("/metadata/resourceVersion").is_some());
        };
        let ns = reg
            .create(
                &target("Namespace", None),
                json!({"metadata": {"name": "d"}}),
                &o,
            )
            .await
            .unwrap();
        same(&ns);
        let pods = target("Pod", Some("d"));
        let pod = json!({"metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        let created = reg.create(&pods, pod, &o).await.unwrap();
        same(&created);
        let mut changed = created.object.clone();
        changed["metadata"]["labels"]["a"] = json!("c");
        let updated = reg.update(&pods, "p", changed, &o).await.unwrap();
        same(&updated);
        assert_ne!(
            updated.object["metadata"]["resourceVersion"],
            created.object["metadata"]["resourceVersion"]
        );
        let dry = reg
            .create(
                &pods,
                json!({"metadata": {"name": "q"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
                &WriteOptions {
                    dry_run: true,
                    ..o.clone()
                },
            )
            .await
            .unwrap();
        assert!(dry.stored.is_none());
    }

    /// A store whose `cached` copies are frozen at one moment: every read-modify-write
    /// starts from a stale copy, as it can behind a watch cache that lags.
    struct StaleCache {
        inner: storage::embedded::EmbeddedStore,
        frozen: std::sync::Mutex<std::collections::HashMap<String, storage::KeyValue>>,
    }

    impl StaleCache {
        async fn freeze(&self) {
            let all = self.inner.list("", &Default::default()).await.unwrap();
            let mut frozen = self.frozen.lock().unwrap();
            *frozen = all
                .items
                .into_iter()
                .map(|kv| (kv.key.clone(), kv))
                .collect();
        }
    }

    #[async_trait::async_trait]
    impl storage::Storage for StaleCache {
        fn cached(&self, key: &str) -> Option<storage::KeyValue> {
            self.frozen.lock().unwrap().get(key).cloned()
        }
        async fn create(&self, key: &str, value: bytes::Bytes) -> storage::Result<i64> {
            self.inner.create(key, value).await
        }
        async fn get(&self, key: &str) -> storage::Result<Option<storage::KeyValue>> {
            self.inner.get(key).await
        }
        async fn list(
            &self,
            prefix: &str,
            opts: &storage::ListOptions,
        ) -> storage::Result<storage::ListResult> {
            self.inner.list(prefix, opts).await
        }
        async fn update(&self, key: &str, value: bytes::Bytes, rev: i64) -> storage::Result<i64> {
            self.inner.update(key, value, rev).await
        }
        async fn delete(
            &self,
            key: &str,
            rev: Option<i64>,
        ) -> storage::Result<(storage::KeyValue, i64)> {
            self.inner.delete(key, rev).await
        }
        async fn watch(
            &self,
            prefix: &str,
            from: i64,
        ) -> storage::Result<
            futures::stream::BoxStream<'static, storage::Result<storage::WatchEvent>>,
        > {
            self.inner.watch(prefix, from).await
        }
        async fn current_revision(&self) -> storage::Result<i64> {
            self.inner.current_revision().await
        }
        async fn compact(&self, rev: i64) -> storage::Result<()> {
            self.inner.compact(rev).await
        }
    }

    #[tokio::test]
    async fn writes_starting_from_a_stale_cached_copy_decide_on_the_current_object() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(StaleCache {
            inner: storage::embedded::EmbeddedStore::open(dir.path()).unwrap(),
            frozen: Default::default(),
        });
        let reg = test_registry(store.clone());
        let o = test_options();
        reg.create(
            &target("Namespace", None),
            json!({"metadata": {"name": "d"}}),
            &o,
        )
        .await
        .unwrap();
        let cms = target("ConfigMap", Some("d"));
        reg.create(
            &cms,
            json!({"metadata": {"name": "c"}, "data": {"k": "v1"}}),
            &o,
        )
        .await
        .unwrap();
        store.freeze().await;
        let patch = |v: &str| format!(r#"{{"data":{{"k":"{v}"}}}}"#).into_bytes();
        let rv = |w: &Value| {
            w["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let v2 = reg
            .patch(&cms, "c", PatchType::Merge, &patch("v2"), false, &o)
            .await
            .unwrap();
        // The cache still says v1. Patching back to v1 is a no-op for the stale copy but not
        // for the stored object: it must be written.
        let v1 = reg
            .patch(&cms, "c", PatchType::Merge, &patch("v1"), false, &o)
            .await
            .unwrap();
        assert_ne!(rv(&v1.object), rv(&v2.object));
        assert_eq!(reg.get(&cms, "c").await.unwrap()["data"]["k"], "v1");
        // And a real no-op answers the stored object, not the stale copy.
        let same = reg
            .patch(&cms, "c", PatchType::Merge, &patch("v1"), false, &o)
            .await
            .unwrap();
        assert_eq!(rv(&same.object), rv(&v1.object));
        // A precondition on the current resourceVersion holds although the copy is older.
        let deleted = reg
            .delete(
                &cms,
                "c",
                &json!({"preconditions": {"resourceVersion": rv(&v1.object)}}),
                false,
            )
            .await
            .unwrap();
        assert!(matches!(deleted, Deleted::Gone(_)));
        // Gone, though the stale copy is still there.
        let err = reg.delete(&cms, "c", &json!({}), false).await.err();
        assert_eq!(err.map(|e| e.code), Some(404));
        let err = reg
            .patch(&cms, "c", PatchType::Merge, &patch("v3"), false, &o)
            .await
            .unwrap_err();
        assert_eq!(err.code, 404);
    }

    #[test]
    fn continue_tokens_round_trip() {
        let tok = encode_continue(
            42,
            "/registry/pods/default/web-1",
            "/registry/pods/default/",
        );
        let (rv, key) = decode_continue(&tok, "/registry/pods/default/").unwrap();
        assert_eq!((rv, key.as_str()), (42, "/registry/pods/default/web-1"));
        assert_eq!(decode_continue("!!!", "/p/").unwrap_err().code, 400);
    }

    #[test]
    fn unknown_fields_are_dropped_by_path() {
        let mut v = json!({"spec": {"foo": 1, "containers": [{"name": "a"}, {"name": "b", "bar": 2}], "keep": 3}});
        drop_field(&mut v, "spec.foo");
        drop_field(&mut v, "spec.containers[1].bar");
        drop_field(&mut v, "spec.missing.deeper");
        assert_eq!(
            v,
            json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "keep": 3}})
        );
    }

    #[test]
    fn spec_change_detection_ignores_metadata_and_status() {
        let a = json!({"metadata":{"labels":{"a":"1"}},"spec":{"x":1},"status":{"y":1}});
        let b = json!({"metadata":{"labels":{"a":"2"}},"spec":{"x":1},"status":{"y":2}});
        assert!(!spec_changed(&a, &b));
        let c = json!({"metadata":{},"spec":{"x":2}});
        assert!(spec_changed(&a, &c));
        let d = json!({"metadata":{},"data":{"k":"v"}});
        assert!(spec_changed(&a, &d));
    }
}
