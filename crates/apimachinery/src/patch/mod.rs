//! The three PATCH flavours kube-apiserver accepts — JSON patch (RFC 6902), JSON merge patch
//! (RFC 7386) and strategic merge patch — as pure functions on `serde_json::Value`, plus the
//! schema seam ([`PatchSchema`]) that strategic merge patch and server-side apply read list and
//! map semantics from.
//!
//! Results and error texts follow upstream (`k8s.io/apimachinery/pkg/util/strategicpatch`,
//! `evanphx/json-patch`, `k8s.io/apiserver/pkg/endpoints/handlers/patch.go`) because kubectl
//! prints the server's message verbatim. Every error knows the HTTP status upstream answers
//! with ([`PatchError::code`]) and can be turned into an upstream-shaped `Status`
//! ([`PatchError::to_api_error`]).

mod gofmt;
mod strategic;

use crate::errors::{ApiError, Reason};
use serde_json::{json, Value};
use std::collections::HashMap;

pub use strategic::strategic_merge_patch;

/// Patch-relevant metadata of one field of a schema, as published in the OpenAPI document
/// (`x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`, `x-kubernetes-list-type`,
/// `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldMeta {
    /// `"merge"`, `"replace"`, `"retainKeys"` or `"merge,retainKeys"`.
    pub patch_strategy: Option<String>,
    pub patch_merge_key: Option<String>,
    /// `"atomic"`, `"set"` or `"map"`.
    pub list_type: Option<String>,
    pub list_map_keys: Vec<String>,
    /// `"atomic"` or `"granular"`.
    pub map_type: Option<String>,
    pub is_list: bool,
    /// A map with `additionalProperties` (labels, ConfigMap data): its keys are data, not fields.
    pub is_map: bool,
    /// A struct with declared `properties`.
    pub is_object: bool,
    /// The schema default of a scalar field. Server-side apply uses it for list-map key fields
    /// the applied configuration omits (e.g. `ports[].protocol`), as structured-merge-diff does.
    pub default: Option<Value>,
}

impl FieldMeta {
    /// Whether the patch strategy includes `merge` (it may be `merge,retainKeys`).
    pub fn merges(&self) -> bool {
        self.strategies().any(|s| s == "merge")
    }

    /// Whether the patch strategy includes `retainKeys`.
    pub fn retains_keys(&self) -> bool {
        self.strategies().any(|s| s == "retainKeys")
    }

    /// Whether the patch strategy is `replace`.
    pub fn replaces(&self) -> bool {
        self.strategies().any(|s| s == "replace")
    }

    fn strategies(&self) -> impl Iterator<Item = &str> {
        self.patch_strategy
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
    }
}

/// Where strategic merge patch and server-side apply learn how lists and maps of a kind merge.
///
/// Path convention: `path` lists JSON property names from the object root. A list's items are
/// reached through the list field's own name (the items of `spec.containers` have their fields
/// at `["spec", "containers", "image"]`), and the values of an `additionalProperties` map
/// through the map field's name followed by `"*"` (`["spec", "selectors", "*", "matchLabels"]`).
/// The root itself is `[]`. Callers only ask for paths of fields present in some document.
pub trait PatchSchema: Send + Sync {
    /// Metadata of the field at `path`; `None` when the schema does not know it, in which case
    /// it is treated as plain JSON: maps merge, lists are replaced (atomic).
    fn field(&self, path: &[&str]) -> Option<FieldMeta>;
}

/// A schema that knows nothing: every map merges and every list is atomic. Used for kinds
/// without a published schema.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSchema;

impl PatchSchema for NoSchema {
    fn field(&self, _path: &[&str]) -> Option<FieldMeta> {
        None
    }
}

/// A small in-memory [`PatchSchema`], for tests and for kinds whose few merge rules are known
/// without the OpenAPI document.
#[derive(Debug, Clone, Default)]
pub struct StaticSchema {
    fields: HashMap<Vec<String>, FieldMeta>,
}

impl StaticSchema {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a schema from `(dotted path, meta)` pairs, e.g. `("spec.template.spec.containers",
    /// FieldMeta { .. })`; use `*` for map values as in [`PatchSchema`].
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = (&'a str, FieldMeta)>) -> Self {
        let mut s = Self::new();
        for (path, meta) in entries {
            s = s.with(path, meta);
        }
        s
    }

    /// Adds or replaces the metadata of the field at dotted `path`.
    pub fn with(mut self, path: &str, meta: FieldMeta) -> Self {
        let key = if path.is_empty() {
            Vec::new()
        } else {
            path.split('.').map(str::to_string).collect()
        };
        self.fields.insert(key, meta);
        self
    }

    /// A list merged by key, as `x-kubernetes-list-type: map` with the same merge key.
    pub fn map_list(key: &str) -> FieldMeta {
        FieldMeta {
            patch_strategy: Some("merge".into()),
            patch_merge_key: Some(key.into()),
            list_type: Some("map".into()),
            list_map_keys: vec![key.into()],
            is_list: true,
            ..FieldMeta::default()
        }
    }

    /// A list of scalars merged as a set (`finalizers`).
    pub fn set_list() -> FieldMeta {
        FieldMeta {
            patch_strategy: Some("merge".into()),
            list_type: Some("set".into()),
            is_list: true,
            ..FieldMeta::default()
        }
    }

    /// A list replaced as a whole (`tolerations`, `args`).
    pub fn atomic_list() -> FieldMeta {
        FieldMeta {
            list_type: Some("atomic".into()),
            is_list: true,
            ..FieldMeta::default()
        }
    }

    /// A string-keyed map whose keys are data (`labels`).
    pub fn string_map() -> FieldMeta {
        FieldMeta {
            is_map: true,
            ..FieldMeta::default()
        }
    }

    /// A struct replaced as a whole (`x-kubernetes-map-type: atomic`, e.g. `LabelSelector`).
    pub fn atomic_object() -> FieldMeta {
        FieldMeta {
            map_type: Some("atomic".into()),
            is_object: true,
            ..FieldMeta::default()
        }
    }

    /// A struct with declared fields.
    pub fn object() -> FieldMeta {
        FieldMeta {
            is_object: true,
            ..FieldMeta::default()
        }
    }
}

impl PatchSchema for StaticSchema {
    fn field(&self, path: &[&str]) -> Option<FieldMeta> {
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.fields.get(&key).cloned()
    }
}

/// The most operations upstream accepts in one JSON patch.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10000;

/// Why a patch could not be applied. Messages are upstream's; [`PatchError::code`] says which
/// HTTP status kube-apiserver answers with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// The patch body is not what the patch type requires (bad JSON, a JSON patch that is not a
    /// list of operations, a merge patch that is not an object). 400.
    #[error("{0}")]
    BadRequest(String),
    /// More than [`MAX_JSON_PATCH_OPERATIONS`] operations. 413.
    #[error("The allowed maximum operations in a JSON patch is {max}, got {got}")]
    TooManyOperations { max: usize, got: usize },
    /// A JSON patch operation failed against the document (missing path, failed `test`). 422.
    #[error("{0}")]
    JsonPatchFailed(String),
    /// 400.
    #[error("invalid JSON document")]
    BadJsonDoc,
    /// A `$deleteFromPrimitiveList` directive without a field name. 400.
    #[error("invalid patch format of primitive list")]
    BadPatchFormatForPrimitiveList,
    /// A `$retainKeys` list that is not a list, or that misses a key the patch sets. 400.
    #[error("invalid patch format of retainKeys")]
    BadPatchFormatForRetainKeys,
    /// A malformed `$setElementOrder` directive. 400.
    #[error("invalid patch format of setElementOrder list")]
    BadPatchFormatForSetElementOrderList,
    /// 422.
    #[error("lists of lists are not supported")]
    NoListOfLists,
    /// `$patch` with a value other than `replace`/`delete` in a map (upstream also rejects
    /// `merge` there). 500 upstream, which passes the plain error through.
    #[error("unknown patch type: {directive} in map: {map}")]
    UnknownPatchType { directive: String, map: String },
    /// `$patch: merge` as a list element. 500 upstream.
    #[error("merging lists cannot yet be specified in the patch")]
    MergeDirectiveInList,
    /// A list element lacks the merge key of its list. 500 upstream.
    #[error("map: {map} does not contain declared merge key: {key}")]
    NoMergeKey { map: String, key: String },
    /// A value has another JSON type than the directive or list needs. 500 upstream.
    #[error("expected a {expected}, but received a {actual}")]
    BadArgType { expected: String, actual: String },
    /// A list of objects declared `merge` without a merge key. 500 upstream.
    #[error("cannot merge lists without merge key for type {0}")]
    MergeWithoutMergeKey(String),
    /// Elements of one list have different JSON types. 500 upstream.
    #[error("list element types are not identical: {0}")]
    MixedElementTypes(String),
    /// The patch list is ordered differently from its `$setElementOrder` list. 500 upstream.
    #[error("the order in patch list:\n{patch}\n doesn't match $setElementOrder list:\n{order}")]
    SetElementOrderMismatch { patch: String, order: String },
    /// A `$`-prefixed key that is no strategic-merge directive. Upstream drops unknown fields
    /// silently with `fieldValidation=Ignore` and rejects them as a strict decoding error
    /// otherwise; we always reject. 422.
    #[error("strict decoding error: unknown field \"{0}\"")]
    UnknownDirective(String),
}

impl PatchError {
    /// The HTTP status kube-apiserver answers with for this error.
    pub fn code(&self) -> u16 {
        match self {
            Self::BadRequest(_)
            | Self::BadJsonDoc
            | Self::BadPatchFormatForPrimitiveList
            | Self::BadPatchFormatForRetainKeys
            | Self::BadPatchFormatForSetElementOrderList => 400,
            Self::TooManyOperations { .. } => 413,
            Self::JsonPatchFailed(_) | Self::NoListOfLists | Self::UnknownDirective(_) => 422,
            Self::UnknownPatchType { .. }
            | Self::MergeDirectiveInList
            | Self::NoMergeKey { .. }
            | Self::BadArgType { .. }
            | Self::MergeWithoutMergeKey(_)
            | Self::MixedElementTypes(_)
            | Self::SetElementOrderMismatch { .. } => 500,
        }
    }

    /// The `Status` upstream returns. 422s are built like `errors.NewGenericServerResponse`
    /// (fixed message, the real text in `details.causes`); 500s are plain errors upstream, which
    /// it renders without a reason — the closest we can express is `InternalError`.
    pub fn to_api_error(&self) -> ApiError {
        let msg = self.to_string();
        match self.code() {
            400 => ApiError::bad_request(msg),
            413 => ApiError::new(
                Reason::RequestEntityTooLarge,
                format!("Request entity too large: {msg}"),
            ),
            422 => ApiError::new(
                Reason::Invalid,
                "the server rejected our request due to an error in our request",
            )
            .with_details(
                json!({"causes": [{"reason": "UnexpectedServerResponse", "message": msg}]}),
            ),
            _ => ApiError::new(Reason::InternalError, msg),
        }
    }
}

/// Applies an RFC 6902 JSON patch (`application/json-patch+json`). `patch` is the decoded
/// request body; the original is left untouched and a patched copy returned.
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops = patch.as_array().ok_or_else(|| {
        PatchError::BadRequest(format!(
            "json: cannot unmarshal {} into Go value of type jsonpatch.Patch",
            gofmt::json_kind(patch)
        ))
    })?;
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations {
            max: MAX_JSON_PATCH_OPERATIONS,
            got: ops.len(),
        });
    }
    let mut doc = original.clone();
    for op in ops {
        let parsed: json_patch::PatchOperation =
            serde_json::from_value(op.clone()).map_err(|e| bad_operation(op, e))?;
        if let Err(e) = json_patch::patch(&mut doc, std::slice::from_ref(&parsed)) {
            return Err(PatchError::JsonPatchFailed(json_patch_message(
                &doc, &parsed, &e,
            )));
        }
    }
    Ok(doc)
}

fn bad_operation(op: &Value, e: serde_json::Error) -> PatchError {
    match op.get("op").and_then(Value::as_str) {
        Some(kind) if !["add", "remove", "replace", "move", "copy", "test"].contains(&kind) => {
            PatchError::JsonPatchFailed(format!("Unexpected kind: {kind}"))
        }
        None => PatchError::JsonPatchFailed("Unexpected kind: ".into()),
        _ => PatchError::BadRequest(e.to_string()),
    }
}

/// Renders a json-patch failure the way `evanphx/json-patch` (used by kube-apiserver) words it.
fn json_patch_message(
    doc: &Value,
    op: &json_patch::PatchOperation,
    err: &json_patch::PatchError,
) -> String {
    use json_patch::{PatchErrorKind, PatchOperation as Op};
    let path = op.path().to_string();
    match (op, &err.kind) {
        (Op::Test(_), PatchErrorKind::TestFailed) => {
            format!("testing value {path} failed: test failed")
        }
        (Op::Add(_), _) => {
            format!("add operation does not apply: doc is missing path: \"{path}\": missing value")
        }
        (Op::Remove(_), _) => {
            format!(
                "remove operation does not apply: doc is missing path: \"{path}\": missing value"
            )
        }
        (Op::Replace(_), _) => {
            format!("replace operation does not apply: doc is missing key: {path}: missing value")
        }
        (Op::Move(m), PatchErrorKind::InvalidFromPointer) => {
            format!(
                "move operation does not apply: doc is missing from path: {}: missing value",
                m.from
            )
        }
        (Op::Copy(c), PatchErrorKind::InvalidFromPointer) => {
            format!(
                "copy operation does not apply: doc is missing from path: \"{}\": missing value",
                c.from
            )
        }
        (Op::Move(_), _) => format!(
            "move operation does not apply: doc is missing destination path: {path}: missing value"
        ),
        (Op::Copy(_), _) => format!(
            "copy operation does not apply: doc is missing destination path: {path}: missing value"
        ),
        (Op::Test(_), _) => {
            let _ = doc;
            format!("testing value {path} failed: test failed")
        }
    }
}

/// Applies an RFC 7386 JSON merge patch (`application/merge-patch+json`): objects merge,
/// `null` deletes, everything else (lists included) is replaced.
pub fn merge_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    if !patch.is_object() {
        // evanphx/json-patch only accepts an object as a merge patch document.
        return Err(PatchError::BadRequest("Invalid JSON Patch".into()));
    }
    if !original.is_object() {
        return Err(PatchError::BadRequest("Invalid JSON Document".into()));
    }
    let mut doc = original.clone();
    json_patch::merge(&mut doc, patch);
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_patch_replaces_and_adds() {
        let orig =
            json!({"spec": {"replicas": 1, "template": {"metadata": {"labels": {"a": "b"}}}}});
        let patch = json!([
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/spec/template/metadata/labels/c", "value": "d"},
        ]);
        let got = json_patch(&orig, &patch).unwrap();
        assert_eq!(
            got,
            json!({"spec": {"replicas": 3, "template": {"metadata": {"labels": {"a": "b", "c": "d"}}}}})
        );
    }

    #[test]
    fn json_patch_failures_use_upstream_wording_and_codes() {
        let orig = json!({"spec": {"replicas": 1}});
        let cases = [
            (
                json!([{"op": "remove", "path": "/spec/template/spec/nodeSelector"}]),
                "remove operation does not apply: doc is missing path: \"/spec/template/spec/nodeSelector\": missing value",
                422,
            ),
            (
                json!([{"op": "replace", "path": "/spec/paused", "value": true}]),
                "replace operation does not apply: doc is missing key: /spec/paused: missing value",
                422,
            ),
            (
                json!([{"op": "test", "path": "/spec/replicas", "value": 2}]),
                "testing value /spec/replicas failed: test failed",
                422,
            ),
            (json!([{"op": "frob", "path": "/spec"}]), "Unexpected kind: frob", 422),
            (
                json!({"op": "add"}),
                "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
                400,
            ),
        ];
        for (patch, msg, code) in cases {
            let err = json_patch(&orig, &patch).unwrap_err();
            assert_eq!(err.to_string(), msg, "patch {patch}");
            assert_eq!(err.code(), code, "patch {patch}");
        }
    }

    #[test]
    fn json_patch_rejects_too_many_operations() {
        let ops: Vec<Value> = (0..10001)
            .map(|_| json!({"op": "test", "path": "", "value": {}}))
            .collect();
        let err = json_patch(&json!({}), &Value::Array(ops)).unwrap_err();
        assert_eq!(err.code(), 413);
        assert_eq!(
            err.to_string(),
            "The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
    }

    #[test]
    fn merge_patch_removes_labels_and_replaces_lists() {
        let orig = json!({"metadata": {"labels": {"run": "x", "a": "b"}}, "spec": {"l": [1, 2]}});
        let cases = [
            (
                json!({"metadata": {"labels": {"run": null}}}),
                json!({"metadata": {"labels": {"a": "b"}}, "spec": {"l": [1, 2]}}),
            ),
            (
                json!({"spec": {"l": [3]}}),
                json!({"metadata": {"labels": {"run": "x", "a": "b"}}, "spec": {"l": [3]}}),
            ),
            (
                json!({"metadata": {"annotations": {"note": "hello"}}}),
                json!({"metadata": {"labels": {"run": "x", "a": "b"}, "annotations": {"note": "hello"}}, "spec": {"l": [1, 2]}}),
            ),
        ];
        for (patch, want) in cases {
            assert_eq!(merge_patch(&orig, &patch).unwrap(), want, "patch {patch}");
        }
    }

    #[test]
    fn merge_patch_must_be_an_object() {
        let err = merge_patch(&json!({}), &json!([1])).unwrap_err();
        assert_eq!(
            (err.code(), err.to_string().as_str()),
            (400, "Invalid JSON Patch")
        );
    }

    #[test]
    fn errors_render_as_upstream_statuses() {
        let s = PatchError::JsonPatchFailed("x".into())
            .to_api_error()
            .to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["reason"], "Invalid");
        assert_eq!(s["details"]["causes"][0]["message"], "x");
        let s = PatchError::BadPatchFormatForRetainKeys
            .to_api_error()
            .to_status();
        assert_eq!(
            (s["code"].as_u64(), s["message"].as_str()),
            (Some(400), Some("invalid patch format of retainKeys"))
        );
    }

    #[test]
    fn field_meta_parses_combined_strategies() {
        let m = FieldMeta {
            patch_strategy: Some("merge,retainKeys".into()),
            ..FieldMeta::default()
        };
        assert!(m.merges() && m.retains_keys() && !m.replaces());
    }
}
