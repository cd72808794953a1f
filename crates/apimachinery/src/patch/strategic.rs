//! Strategic merge patch (`application/strategic-merge-patch+json`), the server half of
//! upstream's `strategicpatch.StrategicMergeMapPatch`: maps merge recursively, `null` deletes,
//! lists declared `patchStrategy: merge` merge by their merge key (or as sets when they hold
//! scalars), every other list is replaced, and the `$patch`, `$retainKeys`,
//! `$deleteFromPrimitiveList/<list>` and `$setElementOrder/<list>` directives work as upstream,
//! including the order upstream gives merged lists. Directives never leak into the result.

use super::gofmt;
use super::{FieldMeta, PatchError, PatchSchema};
use serde_json::{Map, Value};

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList";
const SET_ELEMENT_ORDER: &str = "$setElementOrder";

const GO_LIST: &str = "[]interface {}";
const GO_MAP: &str = "map[string]interface {}";

/// Applies a strategic merge `patch` to `original` with the list and map semantics `schema`
/// declares (see [`PatchSchema`] for its path convention). Fields unknown to the schema merge as
/// plain JSON: maps merge, lists are replaced.
pub fn strategic_merge_patch(
    original: &Value,
    patch: &Value,
    schema: &dyn PatchSchema,
) -> Result<Value, PatchError> {
    let patch = match patch {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(PatchError::BadRequest(format!(
                "json: cannot unmarshal {} into Go value of type map[string]interface {{}}",
                gofmt::json_kind(other)
            )))
        }
    };
    let original = match original {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        _ => return Err(PatchError::BadJsonDoc),
    };
    let ctx = Ctx {
        schema,
        path: Vec::new(),
        is_map: false,
    };
    merge_map(original, patch, &ctx).map(Value::Object)
}

/// Where in the schema the map being merged sits.
struct Ctx<'a> {
    schema: &'a dyn PatchSchema,
    /// Schema path of the map (for list items: of their list).
    path: Vec<String>,
    /// The map is an `additionalProperties` map: its values share the schema entry `path + "*"`.
    is_map: bool,
}

impl<'a> Ctx<'a> {
    fn child_path(&self, key: &str) -> Vec<String> {
        let mut p = self.path.clone();
        p.push(if self.is_map { "*" } else { key }.to_string());
        p
    }

    fn meta(&self, key: &str) -> (Vec<String>, FieldMeta) {
        let path = self.child_path(key);
        let refs: Vec<&str> = path.iter().map(String::as_str).collect();
        let meta = self.schema.field(&refs).unwrap_or_default();
        (path, meta)
    }

    fn nested(&self, path: Vec<String>, meta: &FieldMeta) -> Ctx<'a> {
        Ctx {
            schema: self.schema,
            path,
            is_map: meta.is_map,
        }
    }

    fn items(&self, path: Vec<String>) -> Ctx<'a> {
        Ctx {
            schema: self.schema,
            path,
            is_map: false,
        }
    }
}

fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    ctx: &Ctx,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(directive) = patch.get(DIRECTIVE).cloned() {
        return directive_in_map(&directive, patch);
    }
    apply_retain_keys(&mut original, &mut patch)?;
    merge_ordered_lists(&mut original, &mut patch, ctx)?;

    for (raw_key, patch_value) in patch {
        let (key, is_delete_list) = if raw_key.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            (extract_key(&raw_key, DELETE_FROM_PRIMITIVE_LIST)?, true)
        } else if raw_key.starts_with('$') {
            return Err(PatchError::UnknownDirective(raw_key));
        } else {
            (raw_key, false)
        };

        if patch_value.is_null() {
            original.remove(&key);
            continue;
        }
        let Some(current) = original.get_mut(&key) else {
            if !is_delete_list {
                if let Some(v) = clean(patch_value)? {
                    original.insert(key, v);
                }
            }
            continue;
        };
        match (current, patch_value) {
            (Value::Object(cur), Value::Object(p)) => {
                let (path, meta) = ctx.meta(&key);
                let merged = if meta.replaces() {
                    clean_map(p)?
                } else {
                    merge_map(std::mem::take(cur), p, &ctx.nested(path, &meta))?
                };
                *cur = merged;
            }
            (Value::Array(cur), Value::Array(p)) => {
                let (path, meta) = ctx.meta(&key);
                *cur = if meta.merges() {
                    let mk = meta.patch_merge_key.as_deref();
                    merge_slice(std::mem::take(cur), p, mk, is_delete_list, &ctx.items(path))?
                } else {
                    clean_list(p)?
                };
            }
            (cur, p) => {
                if is_delete_list {
                    continue;
                }
                match clean(p)? {
                    Some(v) => *cur = v,
                    None => {
                        original.remove(&key);
                    }
                }
            }
        }
    }
    Ok(original)
}

fn directive_in_map(
    directive: &Value,
    mut patch: Map<String, Value>,
) -> Result<Map<String, Value>, PatchError> {
    match directive.as_str() {
        Some("replace") => {
            patch.remove(DIRECTIVE);
            clean_map(patch)
        }
        Some("delete") => Ok(Map::new()),
        _ => Err(PatchError::UnknownPatchType {
            directive: gofmt::v(directive),
            map: gofmt::v(&Value::Object(patch)),
        }),
    }
}

/// `$retainKeys`: drops every key of `original` the list does not name; the patch itself may
/// only set keys the list names.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(retain) = retain else {
        return Err(PatchError::BadPatchFormatForRetainKeys);
    };
    let named = |k: &str| retain.iter().any(|r| r.as_str() == Some(k));
    for (k, v) in patch.iter() {
        if v.is_null()
            || k.starts_with(DELETE_FROM_PRIMITIVE_LIST)
            || k.starts_with(SET_ELEMENT_ORDER)
        {
            continue;
        }
        if !named(k) {
            return Err(PatchError::BadPatchFormatForRetainKeys);
        }
    }
    original.retain(|k, _| named(k));
    Ok(())
}

/// `$setElementOrder/<list>`: merges the list it names and orders the result. Precedence is the
/// directive's order, then the patch list's, then the live list's (upstream's rule).
fn merge_ordered_lists(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    ctx: &Ctx,
) -> Result<(), PatchError> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ELEMENT_ORDER))
        .cloned()
        .collect();
    for key in keys {
        let order = match patch.remove(&key) {
            Some(Value::Array(a)) => a,
            Some(other) => return Err(bad_arg(GO_LIST, &other)),
            None => continue,
        };
        let field = extract_key(&key, SET_ELEMENT_ORDER)?;
        let orig_list = match original.get(&field) {
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => return Err(bad_arg(GO_LIST, other)),
            None => None,
        };
        let patch_list = match patch.get(&field) {
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => return Err(bad_arg(GO_LIST, other)),
            None => None,
        };
        let (path, meta) = ctx.meta(&field);
        let mk = meta.patch_merge_key.as_deref();
        validate_with_order(patch_list.as_deref().unwrap_or(&[]), &order, mk)?;

        let merged = match (&orig_list, &patch_list) {
            (Some(o), None) => o.clone(),
            (None, Some(p)) => clean_list(p.clone())?,
            (Some(o), Some(p)) if meta.merges() => {
                merge_slice(o.clone(), p.clone(), mk, false, &ctx.items(path))?
            }
            (Some(_), Some(p)) => clean_list(p.clone())?,
            (None, None) => continue,
        };
        let server_order = orig_list.unwrap_or_default();
        let patch_items = patch_list.unwrap_or_default();
        let ordered = match element_kind(&[&server_order, &patch_items])? {
            // Nothing to order (upstream errors out here; an empty list needs no ordering).
            None => merged,
            Some(kind) => {
                let (in_order, server_only) = partition(merged, &order, mk)?;
                normalize_element_order(in_order, server_only, &order, &server_order, mk, kind)?
            }
        };
        original.insert(field.clone(), Value::Array(ordered));
        patch.remove(&field);
    }
    Ok(())
}

/// Checks that the patch list's items appear in the `$setElementOrder` list in the same relative
/// order (deletions and directive items aside).
fn validate_with_order(
    patch_list: &[Value],
    order: &[Value],
    mk: Option<&str>,
) -> Result<(), PatchError> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let mut kept = Vec::new();
    for item in patch_list {
        if mk.is_some() {
            let m = item.as_object().ok_or_else(|| bad_arg(GO_MAP, item))?;
            if m.get(DIRECTIVE).and_then(Value::as_str) == Some("delete") {
                continue;
            }
        }
        kept.push(item);
    }
    let (mut pi, mut oi) = (0, 0);
    while pi < kept.len() && oi < order.len() {
        if kept[pi]
            .as_object()
            .is_some_and(|m| m.contains_key(DIRECTIVE))
        {
            pi += 1;
            continue;
        }
        if merge_key_value_equal(kept[pi], &order[oi], mk)? {
            pi += 1;
        }
        oi += 1;
    }
    if pi < kept.len() && oi >= order.len() {
        return Err(PatchError::SetElementOrderMismatch {
            patch: gofmt::v(&Value::Array(patch_list.to_vec())),
            order: gofmt::v(&Value::Array(order.to_vec())),
        });
    }
    Ok(())
}

fn merge_key_value_equal(
    left: &Value,
    right: &Value,
    mk: Option<&str>,
) -> Result<bool, PatchError> {
    let Some(key) = mk else {
        return Ok(left == right);
    };
    let l = left.as_object().ok_or_else(|| bad_arg(GO_MAP, left))?;
    let r = right.as_object().ok_or_else(|| bad_arg(GO_MAP, right))?;
    let lv = l.get(key).ok_or_else(|| no_merge_key(left, key))?;
    let rv = r.get(key).ok_or_else(|| no_merge_key(right, key))?;
    Ok(lv == rv)
}

/// The JSON type shared by every element, `None` for no elements at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Object,
    Scalar(&'static str),
}

fn element_kind(slices: &[&[Value]]) -> Result<Option<Kind>, PatchError> {
    let mut kind: Option<&'static str> = None;
    for item in slices.iter().flat_map(|s| s.iter()) {
        if item.is_array() {
            return Err(PatchError::NoListOfLists);
        }
        let t = gofmt::type_name(item);
        match kind {
            None => kind = Some(t),
            Some(k) if k != t => {
                let all: Vec<String> = slices
                    .iter()
                    .map(|s| gofmt::v(&Value::Array(s.to_vec())))
                    .collect();
                return Err(PatchError::MixedElementTypes(format!(
                    "[{}]",
                    all.join(" ")
                )));
            }
            Some(_) => {}
        }
    }
    Ok(kind.map(|k| {
        if k == GO_MAP {
            Kind::Object
        } else {
            Kind::Scalar(k)
        }
    }))
}

fn merge_slice(
    original: Vec<Value>,
    patch: Vec<Value>,
    mk: Option<&str>,
    is_delete_list: bool,
    items: &Ctx,
) -> Result<Vec<Value>, PatchError> {
    if original.is_empty() && patch.is_empty() {
        return Ok(original);
    }
    let Some(kind) = element_kind(&[&original, &patch])? else {
        return Ok(original);
    };
    let (server_order, patch, merged) = match kind {
        Kind::Scalar(_) => {
            if is_delete_list {
                return Ok(original
                    .into_iter()
                    .filter(|v| !patch.contains(v))
                    .collect());
            }
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for v in original.iter().chain(patch.iter()) {
                if !merged.contains(v) {
                    merged.push(v.clone());
                }
            }
            (original, patch, merged)
        }
        Kind::Object => {
            let key = mk.ok_or_else(|| PatchError::MergeWithoutMergeKey("struct".into()))?;
            let (original, patch) = split_special_elements(original, patch, key)?;
            let merged = merge_items_by_key(original.clone(), &patch, key, items)?;
            (original, patch, merged)
        }
    };
    let (in_patch, server_only) = partition(merged, &patch, mk)?;
    normalize_element_order(in_patch, server_only, &patch, &server_order, mk, kind)
}

/// Applies `$patch: delete|replace` list elements; returns the remaining original list and the
/// patch without directive elements.
fn split_special_elements(
    original: Vec<Value>,
    patch: Vec<Value>,
    key: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut original = original;
    let mut plain = Vec::with_capacity(patch.len());
    let mut replace = false;
    for item in patch {
        let Some(directive) = item.get(DIRECTIVE) else {
            plain.push(item);
            continue;
        };
        match directive.as_str() {
            Some("delete") => {
                let value = item.get(key).ok_or_else(|| no_merge_key(&item, key))?;
                original.retain(|o| o.get(key) != Some(value));
            }
            Some("replace") => replace = true,
            Some("merge") => return Err(PatchError::MergeDirectiveInList),
            _ => {
                return Err(PatchError::UnknownPatchType {
                    directive: gofmt::v(directive),
                    map: gofmt::v(&item),
                })
            }
        }
    }
    if replace {
        return Ok((clean_list(plain)?, Vec::new()));
    }
    Ok((original, plain))
}

fn merge_items_by_key(
    mut original: Vec<Value>,
    patch: &[Value],
    key: &str,
    items: &Ctx,
) -> Result<Vec<Value>, PatchError> {
    for item in patch {
        let p = item.as_object().ok_or_else(|| bad_arg(GO_MAP, item))?;
        let value = p.get(key).ok_or_else(|| no_merge_key(item, key))?;
        let mut found = None;
        for (i, o) in original.iter().enumerate() {
            let o = o.as_object().ok_or_else(|| {
                PatchError::BadRequest(format!("value for key {i} is not a map."))
            })?;
            if o.get(key) == Some(value) {
                found = Some(i);
                break;
            }
        }
        match found {
            Some(i) => {
                let cur = original[i].as_object().cloned().unwrap_or_default();
                original[i] = Value::Object(merge_map(cur, p.clone(), items)?);
            }
            None => {
                if let Some(v) = clean(item.clone())? {
                    original.push(v);
                }
            }
        }
    }
    Ok(original)
}

/// Splits `merged` into the items present in `by` and the others, keeping their order.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    mk: Option<&str>,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let mut present = Vec::new();
    let mut absent = Vec::new();
    for item in merged {
        let found = match mk {
            None => by.contains(&item),
            Some(key) => {
                item.as_object().ok_or_else(|| bad_arg(GO_MAP, &item))?;
                let value = item.get(key).ok_or_else(|| no_merge_key(&item, key))?;
                by.iter().any(|b| b.get(key) == Some(value))
            }
        };
        if found {
            present.push(item);
        } else {
            absent.push(item);
        }
    }
    Ok((present, absent))
}

/// Orders the patch items by `patch_order` and the server-only items by `server_order`, then
/// interleaves them, keeping server-only items where the live list had them.
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    mk: Option<&str>,
    kind: Kind,
) -> Result<Vec<Value>, PatchError> {
    let patch_items = normalize_slice_order(patch_items, patch_order, mk, kind)?;
    let server_only = normalize_slice_order(server_only, server_order, mk, kind)?;
    Ok(merge_sorted(
        server_only,
        patch_items,
        server_order,
        mk,
        kind,
    ))
}

fn normalize_slice_order(
    items: Vec<Value>,
    order: &[Value],
    mk: Option<&str>,
    kind: Kind,
) -> Result<Vec<Value>, PatchError> {
    let mut items = items;
    let mut deleted = Vec::new();
    if kind == Kind::Object {
        if let Some(key) = mk {
            for v in items.iter().chain(order.iter()) {
                let m = v.as_object().ok_or_else(|| bad_arg(GO_MAP, v))?;
                if !m.contains_key(key) {
                    return Err(no_merge_key(v, key));
                }
            }
        }
        let (keep, del): (Vec<Value>, Vec<Value>) = items
            .into_iter()
            .partition(|v| v.get(DIRECTIVE).and_then(Value::as_str) != Some("delete"));
        items = keep;
        deleted = del;
    }
    items.sort_by_key(|v| index_of(order, v, mk, kind).unwrap_or(usize::MAX));
    items.extend(deleted);
    Ok(items)
}

fn index_of(list: &[Value], item: &Value, mk: Option<&str>, kind: Kind) -> Option<usize> {
    match (kind, mk) {
        (Kind::Object, Some(key)) => {
            let want = item.get(key);
            list.iter().position(|v| v.get(key) == want)
        }
        _ => list.iter().position(|v| v == item),
    }
}

/// Upstream's `mergeSortedSlice`: inserts each server-only item (`left`) before the first patch
/// item (`right`) that the live list had after it.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    mk: Option<&str>,
    kind: Kind,
) -> Vec<Value> {
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => out.extend(left.next()),
            (None, Some(_)) => out.extend(right.next()),
            (Some(l), Some(r)) => {
                let li = index_of(server_order, l, mk, kind);
                let ri = index_of(server_order, r, mk, kind);
                let take_left = matches!((li, ri), (Some(a), Some(b)) if a < b);
                if take_left {
                    out.extend(left.next());
                } else {
                    out.extend(right.next());
                }
            }
        }
    }
    out
}

fn extract_key(key: &str, prefix: &str) -> Result<String, PatchError> {
    match key.split_once('/') {
        Some((p, rest)) if p == prefix => Ok(rest.to_string()),
        _ if prefix == DELETE_FROM_PRIMITIVE_LIST => {
            Err(PatchError::BadPatchFormatForPrimitiveList)
        }
        _ => Err(PatchError::BadPatchFormatForSetElementOrderList),
    }
}

/// A patch value that lands where the original has nothing to merge with: nulls and directives
/// are dropped (a map carrying `$patch` disappears entirely), as upstream's
/// `removeDirectives` + `discardNullValuesFromPatch` do.
fn clean(value: Value) -> Result<Option<Value>, PatchError> {
    match value {
        Value::Object(m) => {
            if m.contains_key(DIRECTIVE) {
                return Ok(None);
            }
            Ok(Some(Value::Object(clean_map(m)?)))
        }
        Value::Array(a) => Ok(Some(Value::Array(clean_list(a)?))),
        other => Ok(Some(other)),
    }
}

fn clean_map(m: Map<String, Value>) -> Result<Map<String, Value>, PatchError> {
    let mut out = Map::new();
    for (k, v) in m {
        if v.is_null() || k == DIRECTIVE || k == RETAIN_KEYS {
            continue;
        }
        if k.starts_with(SET_ELEMENT_ORDER) || k.starts_with(DELETE_FROM_PRIMITIVE_LIST) {
            continue;
        }
        if k.starts_with('$') {
            return Err(PatchError::UnknownDirective(k));
        }
        if let Some(v) = clean(v)? {
            out.insert(k, v);
        }
    }
    Ok(out)
}

fn clean_list(items: Vec<Value>) -> Result<Vec<Value>, PatchError> {
    let mut out = Vec::with_capacity(items.len());
    for v in items {
        if let Some(v) = clean(v)? {
            out.push(v);
        }
    }
    Ok(out)
}

fn bad_arg(expected: &str, actual: &Value) -> PatchError {
    PatchError::BadArgType {
        expected: expected.into(),
        actual: gofmt::type_name(actual).into(),
    }
}

fn no_merge_key(map: &Value, key: &str) -> PatchError {
    PatchError::NoMergeKey {
        map: gofmt::v(map),
        key: key.into(),
    }
}

#[cfg(test)]
mod tests;
