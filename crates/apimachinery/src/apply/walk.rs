//! Schema-aware walks over objects that server-side apply is built from: the set of fields an
//! object sets, the difference between two objects, the merge of an applied configuration into
//! a live object, and removal of fields by path. List and map semantics come from the
//! [`PatchSchema`]: map-lists are keyed by `x-kubernetes-list-map-keys` (or the patch merge
//! key), set-lists by value, and everything undeclared is atomic, as in structured-merge-diff.

use super::fieldpath::{FieldSet, PathElement};
use crate::patch::{FieldMeta, PatchSchema};
use serde_json::{Map, Value};

/// A position in the schema: the node's metadata and where its children live. `'a` covers
/// the schema and the walked objects, whose property names make up the path, so that a child
/// borrows its path segments instead of copying them.
#[derive(Clone)]
pub(crate) struct Ctx<'a> {
    schema: &'a dyn PatchSchema,
    /// Schema path of this node (list items share their list's path).
    path: Vec<&'a str>,
    meta: Option<FieldMeta>,
    /// The node is an entry of an `additionalProperties` map (its key is data).
    is_map_entry: bool,
    /// The node is a list item.
    is_item: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum ListKind {
    Atomic,
    Map(Vec<String>),
    Set,
}

impl<'a> Ctx<'a> {
    pub(crate) fn root(schema: &'a dyn PatchSchema) -> Self {
        Ctx {
            schema,
            path: Vec::new(),
            meta: schema.field(&[]),
            is_map_entry: false,
            is_item: false,
        }
    }

    fn lookup(&self, path: Vec<&'a str>) -> (Vec<&'a str>, Option<FieldMeta>) {
        let meta = self.schema.field(&path);
        (path, meta)
    }

    fn is_map(&self) -> bool {
        self.meta.as_ref().is_some_and(|m| m.is_map)
    }

    fn child(&self, key: &'a str) -> Ctx<'a> {
        let mut p = Vec::with_capacity(self.path.len() + 1);
        p.extend_from_slice(&self.path);
        p.push(if self.is_map() { "*" } else { key });
        let (path, meta) = self.lookup(p);
        Ctx {
            schema: self.schema,
            path,
            meta,
            is_map_entry: self.is_map(),
            is_item: false,
        }
    }

    fn item(&self) -> Ctx<'a> {
        Ctx {
            schema: self.schema,
            path: self.path.clone(),
            meta: None,
            is_map_entry: false,
            is_item: true,
        }
    }

    fn map_atomic(&self) -> bool {
        self.meta
            .as_ref()
            .is_some_and(|m| m.map_type.as_deref() == Some("atomic"))
    }

    fn list_kind(&self) -> ListKind {
        let Some(m) = &self.meta else {
            return ListKind::Atomic;
        };
        match m.list_type.as_deref() {
            Some("atomic") => ListKind::Atomic,
            Some("set") => ListKind::Set,
            Some("map") if !m.list_map_keys.is_empty() => ListKind::Map(m.list_map_keys.clone()),
            Some("map") => m
                .patch_merge_key
                .clone()
                .map_or(ListKind::Atomic, |k| ListKind::Map(vec![k])),
            _ if m.merges() => m
                .patch_merge_key
                .clone()
                .map_or(ListKind::Set, |k| ListKind::Map(vec![k])),
            _ => ListKind::Atomic,
        }
    }

    /// The path element naming `item` (at position `index`) in this list.
    fn item_element(&self, kind: &ListKind, item: &Value, index: usize) -> PathElement {
        match kind {
            ListKind::Set => PathElement::Value(item.clone()),
            ListKind::Map(keys) => {
                let Some(obj) = item.as_object() else {
                    return PathElement::Index(index);
                };
                let mut fields = Vec::with_capacity(keys.len());
                for k in keys {
                    let v = match obj.get(k) {
                        Some(v) => v.clone(),
                        None => {
                            let mut p: Vec<&str> = self.path.clone();
                            p.push(k);
                            match self.schema.field(&p).and_then(|m| m.default) {
                                Some(d) => d,
                                None => continue,
                            }
                        }
                    };
                    fields.push((k.clone(), v));
                }
                if fields.is_empty() {
                    return PathElement::Index(index);
                }
                fields.sort_by(|a, b| a.0.cmp(&b.0));
                PathElement::Key(fields)
            }
            ListKind::Atomic => PathElement::Index(index),
        }
    }

    fn index_items<'v>(
        &self,
        kind: &ListKind,
        items: &'v [Value],
    ) -> Vec<(PathElement, &'v Value)> {
        let mut out: Vec<(PathElement, &Value)> = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let pe = self.item_element(kind, item, i);
            if !out.iter().any(|(p, _)| *p == pe) {
                out.push((pe, item));
            }
        }
        out
    }
}

/// The fields `value` sets, as structured-merge-diff's `ToFieldSet`: leaves, atomic lists and
/// maps, list items, entries of `additionalProperties` maps and empty maps are members; struct
/// fields holding objects are only implied by what lies below them.
pub(crate) fn field_set<'a>(value: &'a Value, ctx: &Ctx<'a>) -> FieldSet {
    let mut out = FieldSet::new();
    collect_fields(value, ctx, &mut Vec::new(), &mut out);
    out
}

fn collect_fields<'a>(
    value: &'a Value,
    ctx: &Ctx<'a>,
    path: &mut Vec<PathElement>,
    out: &mut FieldSet,
) {
    match value {
        Value::Object(m) if !ctx.map_atomic() => {
            if m.is_empty() {
                out.insert(path);
            }
            for (k, v) in m {
                let child = ctx.child(k);
                path.push(PathElement::Field(k.clone()));
                collect_fields(v, &child, path, out);
                if child.is_map_entry {
                    out.insert(path);
                }
                path.pop();
            }
        }
        Value::Array(items) => {
            let kind = ctx.list_kind();
            if kind == ListKind::Atomic {
                out.insert(path);
                return;
            }
            let item_ctx = ctx.item();
            for (pe, item) in ctx.index_items(&kind, items) {
                path.push(pe);
                collect_fields(item, &item_ctx, path, out);
                out.insert(path);
                path.pop();
            }
        }
        _ => out.insert(path),
    }
}

/// What changed between two objects (structured-merge-diff's `Comparison`).
#[derive(Debug, Default)]
pub(crate) struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

/// Compares `old` and `new`. With `skeleton`, `old` stands for an object that did not exist:
/// upstream compares against an empty typed object whose struct fields (`metadata`, `spec`, …)
/// already exist, so struct nodes are not reported as added themselves.
pub(crate) fn compare<'a>(
    old: &'a Value,
    new: &'a Value,
    ctx: &Ctx<'a>,
    skeleton: bool,
) -> Comparison {
    let mut c = Comparison::default();
    compare_walk(Some(old), Some(new), ctx, &mut Vec::new(), &mut c, skeleton);
    c
}

fn compare_walk<'a>(
    l: Option<&'a Value>,
    r: Option<&'a Value>,
    ctx: &Ctx<'a>,
    path: &mut Vec<PathElement>,
    c: &mut Comparison,
    skeleton: bool,
) {
    let is_obj = |v: Option<&Value>| matches!(v, Some(Value::Object(_)));
    let is_arr = |v: Option<&Value>| matches!(v, Some(Value::Array(_)));
    let absent_or =
        |v: Option<&Value>, f: &dyn Fn(&Value) -> bool| v.is_none_or(|x| x.is_null() || f(x));
    let granular_map = !ctx.map_atomic()
        && (is_obj(l) || is_obj(r))
        && absent_or(l, &|x| x.is_object())
        && absent_or(r, &|x| x.is_object());
    let list_kind = ctx.list_kind();
    let granular_list = list_kind != ListKind::Atomic
        && (is_arr(l) || is_arr(r))
        && absent_or(l, &|x| x.is_array())
        && absent_or(r, &|x| x.is_array());

    let empty = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    };
    if (granular_map || granular_list) && !(empty(l) && empty(r)) {
        if granular_map {
            let lm = l.and_then(Value::as_object);
            let rm = r.and_then(Value::as_object);
            let mut keys: Vec<&String> = lm.map(|m| m.keys().collect()).unwrap_or_default();
            for k in rm.into_iter().flat_map(|m| m.keys()) {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            for k in keys {
                let child = ctx.child(k);
                path.push(PathElement::Field(k.clone()));
                compare_walk(
                    lm.and_then(|m| m.get(k)),
                    rm.and_then(|m| m.get(k)),
                    &child,
                    path,
                    c,
                    skeleton,
                );
                path.pop();
            }
        } else {
            let no_items: &[Value] = &[];
            let la = l.and_then(Value::as_array).map_or(no_items, Vec::as_slice);
            let ra = r.and_then(Value::as_array).map_or(no_items, Vec::as_slice);
            let li = ctx.index_items(&list_kind, la);
            let ri = ctx.index_items(&list_kind, ra);
            let item_ctx = ctx.item();
            let mut seen: Vec<&PathElement> = Vec::new();
            for (pe, _) in li.iter().chain(ri.iter()) {
                if seen.contains(&pe) {
                    continue;
                }
                seen.push(pe);
                let lv = li.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
                let rv = ri.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
                path.push(pe.clone());
                compare_walk(lv, rv, &item_ctx, path, c, skeleton);
                path.pop();
            }
        }
        let struct_node = granular_map && !ctx.is_map_entry && !ctx.is_item && !ctx.is_map();
        if l.is_none() && !(skeleton && struct_node) {
            c.added.insert(path);
        } else if r.is_none() {
            c.removed.insert(path);
        }
        return;
    }
    match (l, r) {
        (None, Some(_)) => c.added.insert(path),
        (Some(_), None) => c.removed.insert(path),
        (Some(a), Some(b)) if a != b => c.modified.insert(path),
        _ => {}
    }
}

/// Merges an applied configuration into the live object: fields merge, map-lists merge by key
/// and set-lists by value (in structured-merge-diff's order), everything else is replaced.
/// A `null` in the configuration removes the field.
pub(crate) fn merge<'a>(live: Option<&Value>, config: &'a Value, ctx: &Ctx<'a>) -> Option<Value> {
    match (live, config) {
        (_, Value::Null) => None,
        (Some(Value::Object(lm)), Value::Object(rm)) if !ctx.map_atomic() => {
            let mut out = lm.clone();
            for (k, rv) in rm {
                match merge(lm.get(k), rv, &ctx.child(k)) {
                    Some(v) => {
                        out.insert(k.clone(), v);
                    }
                    None => {
                        out.remove(k);
                    }
                }
            }
            Some(Value::Object(out))
        }
        (Some(Value::Array(la)), Value::Array(ra)) if ctx.list_kind() != ListKind::Atomic => {
            Some(Value::Array(merge_lists(la, ra, ctx)))
        }
        (_, other) => Some(without_nulls(other)),
    }
}

/// structured-merge-diff's list merge order: configuration order, with live-only items kept
/// where they were relative to the items both lists share.
fn merge_lists<'a>(la: &[Value], ra: &'a [Value], ctx: &Ctx<'a>) -> Vec<Value> {
    let kind = ctx.list_kind();
    let lhs = ctx.index_items(&kind, la);
    let rhs = ctx.index_items(&kind, ra);
    let item_ctx = ctx.item();
    let in_lhs = |pe: &PathElement| lhs.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
    let in_rhs = |pe: &PathElement| rhs.iter().find(|(p, _)| p == pe).map(|(_, v)| *v);
    let mut shared = rhs
        .iter()
        .filter(|(pe, _)| in_lhs(pe).is_some())
        .map(|(pe, _)| pe);
    let mut next_shared = shared.next();
    let mut out = Vec::with_capacity(lhs.len() + rhs.len());
    let (mut li, mut ri) = (0, 0);
    let push = |l: Option<&Value>, r: Option<&Value>, out: &mut Vec<Value>| {
        let merged = match r {
            Some(r) => merge(l, r, &item_ctx),
            None => l.cloned(),
        };
        out.extend(merged);
    };
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() && ri < rhs.len() {
            let pe = &lhs[li].0;
            if *pe == rhs[ri].0 {
                push(Some(lhs[li].1), Some(rhs[ri].1), &mut out);
                li += 1;
                ri += 1;
                next_shared = shared.next();
                continue;
            }
            if in_rhs(pe).is_some() && next_shared.is_some_and(|n| n != pe) {
                li += 1;
                continue;
            }
        }
        if li < lhs.len() && in_rhs(&lhs[li].0).is_none() {
            push(Some(lhs[li].1), None, &mut out);
            li += 1;
            continue;
        }
        if ri < rhs.len() {
            let pe = &rhs[ri].0;
            push(in_lhs(pe), Some(rhs[ri].1), &mut out);
            ri += 1;
            if next_shared == Some(pe) {
                next_shared = shared.next();
            }
        }
    }
    out
}

fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, x)| !x.is_null())
                .map(|(k, x)| (k.clone(), without_nulls(x)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Removes the node at `path`; containers it leaves empty go too unless `keep` touches them.
/// Returns whether the caller should drop `value` itself because it became empty.
pub(crate) fn remove_path<'a>(
    value: &mut Value,
    path: &'a [PathElement],
    ctx: &Ctx<'a>,
    keep: &FieldSet,
    at: &mut Vec<PathElement>,
) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let removed_child = match (&mut *value, first) {
        (Value::Object(m), PathElement::Field(k)) => {
            let child_ctx = ctx.child(k);
            at.push(first.clone());
            let drop = rest.is_empty()
                || m.get_mut(k)
                    .is_some_and(|c| remove_path(c, rest, &child_ctx, keep, at));
            at.pop();
            drop && m.remove(k).is_some()
        }
        (Value::Array(items), pe) => {
            let kind = ctx.list_kind();
            let pos = items
                .iter()
                .enumerate()
                .position(|(i, item)| ctx.item_element(&kind, item, i) == *pe);
            match pos {
                Some(i) => {
                    at.push(first.clone());
                    let drop =
                        rest.is_empty() || remove_path(&mut items[i], rest, &ctx.item(), keep, at);
                    at.pop();
                    if drop {
                        items.remove(i);
                    }
                    drop
                }
                None => false,
            }
        }
        _ => false,
    };
    let now_empty = match value {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    removed_child && now_empty && !at.is_empty() && !keep.touches(at)
}

/// An empty object, for walks over objects that do not exist yet.
pub(crate) fn empty_object() -> Value {
    Value::Object(Map::new())
}
