//! The compact schema: every definition of the embedded document reduced to what patching and
//! field validation need — types, `$ref`s, properties, `items`, `additionalProperties` and the
//! `x-kubernetes-*` list/map/patch extensions — without descriptions.
//!
//! It is built once, from one pass over the document, and weighs a few hundred kilobytes; the
//! document itself is dropped right after. [`KindSchema`] is a cheap handle on one top-level
//! kind and answers patch-metadata lookups by JSON path.

use crate::source::{self, Doc};
use serde_json::Value;
use std::sync::Arc;

/// The JSON type a schema node declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// No `type` (e.g. `RawExtension`'s content, `JSONSchemaPropsOrBool`): anything goes.
    Any,
    Object,
    Array,
    String,
    Integer,
    Number,
    Boolean,
}

/// The `x-kubernetes-*` extensions of one node.
#[derive(Debug, Default, Clone)]
pub(crate) struct Ext {
    pub patch_strategy: Option<Box<str>>,
    pub patch_merge_key: Option<Box<str>>,
    pub list_type: Option<Box<str>>,
    pub list_map_keys: Box<[Box<str>]>,
    pub map_type: Option<Box<str>>,
    pub preserve_unknown_fields: bool,
    pub int_or_string: bool,
    /// `default`, for scalar fields.
    pub default: Option<Value>,
}

/// One schema node.
#[derive(Debug)]
pub(crate) struct Node {
    pub ty: Ty,
    /// `format` (`int32`, `int64`, `date-time`, `int-or-string`, `byte`, …).
    pub format: Option<Box<str>>,
    /// Index of the definition this node refers to.
    pub reference: Option<u32>,
    /// Properties, sorted by name.
    pub props: Box<[(Box<str>, Node)]>,
    pub required: Box<[Box<str>]>,
    pub items: Option<Box<Node>>,
    pub additional: Option<Box<Node>>,
    pub ext: Option<Box<Ext>>,
}

/// A named definition.
#[derive(Debug)]
pub(crate) struct Def {
    pub name: Box<str>,
    pub node: Node,
    /// Accepts a JSON number as well as a string (`Quantity`, `IntOrString`).
    pub accepts_number: bool,
}

/// `(group, version, kind, definition index)`.
pub(crate) type Gvk = (Box<str>, Box<str>, Box<str>, u32);

/// All definitions plus the indexes lookups need.
#[derive(Debug)]
pub(crate) struct Compact {
    /// Sorted by name.
    pub defs: Vec<Def>,
    /// Kinds and the definitions that declare them, sorted.
    pub gvks: Vec<Gvk>,
    /// Every discovery key of the document (`api/v1`, `apis/apps/v1`, `version`, …), sorted.
    pub gv_keys: Vec<Box<str>>,
}

const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

impl Compact {
    /// Builds the compact schema from the embedded document.
    pub(crate) fn load() -> Self {
        source::with_doc(Self::from_doc)
    }

    fn from_doc(doc: &Doc<'_>) -> Self {
        // BTreeMap iteration is sorted, so indexes into `names` are stable binary-search ranks.
        let names: Vec<&str> = doc.definitions.keys().map(String::as_str).collect();
        let index = |name: &str| names.binary_search(&name).ok().map(|i| i as u32);
        let mut defs = Vec::with_capacity(names.len());
        let mut gvks = Vec::new();
        for (i, (name, raw)) in doc.definitions.iter().enumerate() {
            let value = source::parse(raw);
            if let Some(list) = value
                .get("x-kubernetes-group-version-kind")
                .and_then(Value::as_array)
            {
                for gvk in list {
                    let field = |k: &str| -> Box<str> {
                        gvk.get(k).and_then(Value::as_str).unwrap_or("").into()
                    };
                    gvks.push((field("group"), field("version"), field("kind"), i as u32));
                }
            }
            let mut node = build_node(&value, &index);
            for (_, field, default) in KNOWN_DEFAULTS
                .iter()
                .filter(|(d, _, _)| *d == name.as_str())
            {
                if let Some((_, prop)) = node.props.iter_mut().find(|(k, _)| &**k == *field) {
                    let ext = prop.ext.get_or_insert_with(Default::default);
                    ext.default
                        .get_or_insert_with(|| Value::String((*default).to_owned()));
                }
            }
            let accepts_number = name == QUANTITY
                || node.format.as_deref() == Some("int-or-string")
                || node.ext.as_ref().is_some_and(|e| e.int_or_string);
            defs.push(Def {
                name: name.as_str().into(),
                node,
                accepts_number,
            });
        }
        gvks.sort();
        let mut gv_keys: Vec<Box<str>> =
            doc.paths.keys().map(|p| source::gv_key(p).into()).collect();
        gv_keys.sort();
        gv_keys.dedup();
        Compact {
            defs,
            gvks,
            gv_keys,
        }
    }

    /// Follows `$ref`s to the node that carries the actual shape.
    pub(crate) fn resolve<'a>(&'a self, mut node: &'a Node) -> &'a Node {
        // Definitions never form pure `$ref` cycles; the bound is only a guard.
        for _ in 0..16 {
            match node.reference {
                Some(r) => node = &self.defs[r as usize].node,
                None => break,
            }
        }
        node
    }
}

fn str_field(v: &Value, key: &str) -> Option<Box<str>> {
    v.get(key).and_then(Value::as_str).map(Into::into)
}

fn build_node(v: &Value, index: &impl Fn(&str) -> Option<u32>) -> Node {
    let reference = v
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix("#/definitions/"))
        .and_then(index);
    let props: Box<[(Box<str>, Node)]> = match v.get("properties").and_then(Value::as_object) {
        Some(map) => {
            let mut props: Vec<(Box<str>, Node)> = map
                .iter()
                .map(|(k, p)| (k.as_str().into(), build_node(p, index)))
                .collect();
            props.sort_by(|a, b| a.0.cmp(&b.0));
            props.into()
        }
        None => Box::new([]),
    };
    let items = match v.get("items") {
        Some(Value::Array(list)) => list.first().map(|s| Box::new(build_node(s, index))),
        Some(s @ Value::Object(_)) => Some(Box::new(build_node(s, index))),
        _ => None,
    };
    let additional = match v.get("additionalProperties") {
        Some(s @ Value::Object(_)) => Some(Box::new(build_node(s, index))),
        Some(Value::Bool(true)) => Some(Box::new(any_node())),
        _ => None,
    };
    let ty = match v.get("type").and_then(Value::as_str) {
        Some("object") => Ty::Object,
        Some("array") => Ty::Array,
        Some("string") => Ty::String,
        Some("integer") => Ty::Integer,
        Some("number") => Ty::Number,
        Some("boolean") => Ty::Boolean,
        _ if !props.is_empty() || additional.is_some() => Ty::Object,
        _ if items.is_some() => Ty::Array,
        _ => Ty::Any,
    };
    let required = v
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).map(Into::into).collect())
        .unwrap_or_default();
    let ext = Ext {
        patch_strategy: str_field(v, "x-kubernetes-patch-strategy"),
        patch_merge_key: str_field(v, "x-kubernetes-patch-merge-key"),
        list_type: str_field(v, "x-kubernetes-list-type"),
        list_map_keys: v
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).map(Into::into).collect())
            .unwrap_or_default(),
        map_type: str_field(v, "x-kubernetes-map-type"),
        preserve_unknown_fields: v.get("x-kubernetes-preserve-unknown-fields")
            == Some(&Value::Bool(true)),
        int_or_string: v.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)),
        default: v
            .get("default")
            .filter(|d| !d.is_object() && !d.is_array())
            .cloned(),
    };
    let has_ext = ext.patch_strategy.is_some()
        || ext.patch_merge_key.is_some()
        || ext.list_type.is_some()
        || !ext.list_map_keys.is_empty()
        || ext.map_type.is_some()
        || ext.preserve_unknown_fields
        || ext.int_or_string
        || ext.default.is_some();
    Node {
        ty,
        format: str_field(v, "format"),
        reference,
        props,
        required,
        items,
        additional,
        ext: has_ext.then(|| Box::new(ext)),
    }
}

fn any_node() -> Node {
    Node {
        ty: Ty::Any,
        format: None,
        reference: None,
        props: Box::new([]),
        required: Box::new([]),
        items: None,
        additional: None,
        ext: None,
    }
}

impl Node {
    pub(crate) fn prop(&self, name: &str) -> Option<&Node> {
        self.props
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| &self.props[i].1)
    }
}

pub use apimachinery::patch::FieldMeta;

/// Defaults upstream declares with `+default=` markers but the v2 document does not carry;
/// server-side apply needs them for list-map key fields an applied configuration may omit.
const KNOWN_DEFAULTS: &[(&str, &str, &str)] = &[
    ("io.k8s.api.core.v1.ContainerPort", "protocol", "TCP"),
    ("io.k8s.api.core.v1.ServicePort", "protocol", "TCP"),
];

/// The schema of one kind (e.g. `apps/v1 Deployment`): a cheap, clonable handle into the
/// process-wide compact schema.
#[derive(Debug, Clone)]
pub struct KindSchema {
    pub(crate) compact: Arc<Compact>,
    pub(crate) def: u32,
}

impl KindSchema {
    /// The definition name, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub fn definition(&self) -> &str {
        &self.compact.defs[self.def as usize].name
    }

    pub(crate) fn root(&self) -> &Node {
        &self.compact.defs[self.def as usize].node
    }

    /// The `required` property names of the object at `path` (of its items, for a list; same
    /// addressing as [`KindSchema::field`]); `None` when there is no such field.
    pub fn required(&self, path: &[&str]) -> Option<Vec<String>> {
        let c = &*self.compact;
        let mut shape = c.resolve(self.node(path)?);
        // For a list, the items' required fields.
        while let (Ty::Array, Some(items)) = (shape.ty, shape.items.as_deref()) {
            shape = c.resolve(items);
        }
        Some(shape.required.iter().map(|r| r.to_string()).collect())
    }

    fn node(&self, path: &[&str]) -> Option<&Node> {
        let c = &*self.compact;
        let mut node = self.root();
        for seg in path {
            let mut shape = c.resolve(node);
            // A segment after a list's name addresses the items; nested lists are transparent.
            while shape.ty == Ty::Array && *seg != "*" {
                shape = c.resolve(shape.items.as_deref()?);
            }
            node = if *seg == "*" {
                match (&shape.additional, &shape.items) {
                    (Some(v), _) => v,
                    (None, Some(i)) => i,
                    (None, None) => return None,
                }
            } else {
                shape.prop(seg)?
            };
        }
        Some(node)
    }

    /// Field metadata for `path` (JSON property names from the object root; list items are
    /// reached through the list field's own name, map values through the map field's name
    /// followed by `"*"`). `None` when the schema has no such field. The empty path describes
    /// the object itself.
    pub fn field(&self, path: &[&str]) -> Option<FieldMeta> {
        self.node(path).map(|node| self.compact.meta(node))
    }
}

impl apimachinery::patch::PatchSchema for KindSchema {
    fn field(&self, path: &[&str]) -> Option<FieldMeta> {
        KindSchema::field(self, path)
    }
}

impl Compact {
    fn meta(&self, node: &Node) -> FieldMeta {
        let shape = self.resolve(node);
        // Extensions on the field itself win; the referenced definition supplies the rest
        // (e.g. `x-kubernetes-map-type: atomic` sits on `LabelSelector` itself).
        let own = node.ext.as_deref();
        let def = if std::ptr::eq(shape, node) {
            None
        } else {
            shape.ext.as_deref()
        };
        let pick = |f: fn(&Ext) -> &Option<Box<str>>| {
            own.and_then(|e| f(e).as_deref())
                .or_else(|| def.and_then(|e| f(e).as_deref()))
                .map(str::to_owned)
        };
        let keys = own
            .filter(|e| !e.list_map_keys.is_empty())
            .or(def)
            .map(|e| e.list_map_keys.iter().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        let is_map = shape.ty == Ty::Object && shape.additional.is_some() && shape.props.is_empty();
        FieldMeta {
            patch_strategy: pick(|e| &e.patch_strategy),
            patch_merge_key: pick(|e| &e.patch_merge_key),
            list_type: pick(|e| &e.list_type),
            list_map_keys: keys,
            map_type: pick(|e| &e.map_type),
            is_list: shape.ty == Ty::Array,
            is_map,
            is_object: shape.ty == Ty::Object && !is_map,
            default: own
                .and_then(|e| e.default.clone())
                .or_else(|| def.and_then(|e| e.default.clone())),
        }
    }
}
