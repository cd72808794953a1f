//! Server-side field validation (`fieldValidation=Strict|Warn|Ignore`): finds the fields of a
//! request object that its kind's schema does not declare, and values whose JSON type the
//! typed decoder would reject, reporting them with upstream's wording.
//!
//! Upstream decodes into Go structs with `sigs.k8s.io/json`, which names unknown fields by their
//! full path (`spec.template.spec.containers[0].unknownNested`) and aborts on the first type
//! mismatch (`json: cannot unmarshal string into Go struct field DeploymentSpec.spec.replicas
//! of type int32`). Duplicate-field detection needs the raw bytes and is not done here.

use crate::schema::{Compact, KindSchema, Node, Ty};
use serde_json::Value;

/// What [`crate::OpenApi::check_fields`] found in one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldReport {
    /// Paths of undeclared fields, e.g. `spec.foo`, `spec.containers[0].bar`.
    pub unknown: Vec<String>,
    /// Upstream-worded decode errors for values of the wrong JSON type. Upstream stops at the
    /// first one, so callers usually report only `type_errors[0]`.
    pub type_errors: Vec<String>,
}

/// `strict decoding error: unknown field "spec.foo", unknown field "spec.bar"` — the text of
/// the error upstream returns for `fieldValidation=Strict`.
pub fn strict_decoding_error(unknown: &[String]) -> String {
    let fields: Vec<String> = unknown.iter().map(|p| unknown_field_warning(p)).collect();
    format!("strict decoding error: {}", fields.join(", "))
}

/// `unknown field "spec.foo"` — one `Warning` header text for `fieldValidation=Warn` (and the
/// default), one per unknown field.
pub fn unknown_field_warning(path: &str) -> String {
    format!("unknown field {path:?}")
}

/// The `Status.message` of the 400 BadRequest upstream returns when a create or update body
/// fails to decode (strict decoding or type errors): `Deployment in version "v1" cannot be
/// handled as a Deployment: <cause>`. `kind`/`version` are those the body named.
pub fn decode_error_message(kind: &str, version: &str, cause: &str) -> String {
    format!("{kind} in version {version:?} cannot be handled as a {kind}: {cause}")
}

pub(crate) fn check(schema: &KindSchema, obj: &Value) -> FieldReport {
    let c = &*schema.compact;
    let mut walker = Walker {
        c,
        report: FieldReport::default(),
    };
    let root = schema.root();
    let name = short_name(schema.definition());
    if let Value::Object(map) = obj {
        for (key, value) in map {
            match root.prop(key) {
                Some(child) => {
                    let mut path = key.clone();
                    let mut fpath = key.clone();
                    walker.walk(child, value, &mut path, &mut fpath, name);
                }
                None => walker.report.unknown.push(key.clone()),
            }
        }
    }
    walker.report
}

struct Walker<'a> {
    c: &'a Compact,
    report: FieldReport,
}

impl<'a> Walker<'a> {
    /// `path` names the value with list indexes (for unknown fields), `fpath` without them
    /// (Go's decode errors name struct fields only); `owner` is the innermost struct type.
    fn walk(
        &mut self,
        node: &'a Node,
        v: &Value,
        path: &mut String,
        fpath: &mut String,
        owner: &'a str,
    ) {
        if v.is_null() {
            return;
        }
        let shape = self.c.resolve(node);
        let preserve = |n: &Node| n.ext.as_ref().is_some_and(|e| e.preserve_unknown_fields);
        if preserve(node) || preserve(shape) {
            return;
        }
        let ok = match shape.ty {
            Ty::Any => true,
            Ty::Object => v.is_object(),
            Ty::Array => v.is_array(),
            Ty::String => v.is_string() || (v.is_number() && self.accepts_number(node, shape)),
            Ty::Integer => v.is_i64() || v.is_u64(),
            Ty::Number => v.is_number(),
            Ty::Boolean => v.is_boolean(),
        };
        if !ok {
            let got = match v {
                Value::String(_) => "string".to_owned(),
                Value::Number(n) if shape.ty == Ty::Integer => format!("number {n}"),
                Value::Number(_) => "number".to_owned(),
                Value::Bool(_) => "bool".to_owned(),
                Value::Array(_) => "array".to_owned(),
                _ => "object".to_owned(),
            };
            self.report.type_errors.push(format!(
                "json: cannot unmarshal {got} into Go struct field {owner}.{fpath} of type {}",
                self.go_type(node)
            ));
            return;
        }
        match v {
            Value::Object(map) if !shape.props.is_empty() => {
                let owner = match node.reference {
                    Some(r) => short_name(&self.c.defs[self.c.resolve_index(r) as usize].name),
                    None => owner,
                };
                for (key, value) in map {
                    let (plen, flen) = (path.len(), fpath.len());
                    path.push('.');
                    path.push_str(key);
                    match shape.prop(key) {
                        Some(child) => {
                            fpath.push('.');
                            fpath.push_str(key);
                            self.walk(child, value, path, fpath, owner);
                        }
                        None => self.report.unknown.push(path.clone()),
                    }
                    path.truncate(plen);
                    fpath.truncate(flen);
                }
            }
            Value::Object(map) => {
                if let Some(values) = shape.additional.as_deref() {
                    for (key, value) in map {
                        let (plen, flen) = (path.len(), fpath.len());
                        path.push('.');
                        path.push_str(key);
                        self.walk(values, value, path, fpath, owner);
                        path.truncate(plen);
                        fpath.truncate(flen);
                    }
                }
            }
            Value::Array(list) => {
                if let Some(items) = shape.items.as_deref() {
                    for (i, value) in list.iter().enumerate() {
                        let plen = path.len();
                        path.push_str(&format!("[{i}]"));
                        self.walk(items, value, path, fpath, owner);
                        path.truncate(plen);
                    }
                }
            }
            _ => {}
        }
    }

    fn accepts_number(&self, node: &Node, shape: &Node) -> bool {
        let int_or_string = |n: &Node| {
            n.format.as_deref() == Some("int-or-string")
                || n.ext.as_ref().is_some_and(|e| e.int_or_string)
        };
        int_or_string(node)
            || int_or_string(shape)
            || node
                .reference
                .is_some_and(|r| self.c.defs[self.c.resolve_index(r) as usize].accepts_number)
    }

    /// The Go type upstream's decoder names in type errors.
    fn go_type(&self, node: &Node) -> String {
        if let Some(r) = node.reference {
            let name = &self.c.defs[self.c.resolve_index(r) as usize].name;
            let mut parts = name.rsplit('.');
            let ty = parts.next().unwrap_or_default();
            let pkg = parts.next().unwrap_or_default();
            return format!("{pkg}.{ty}");
        }
        match node.ty {
            Ty::Array => match node.items.as_deref() {
                Some(items) => format!("[]{}", self.go_type(items)),
                None => "[]interface {}".to_owned(),
            },
            Ty::Object => match node.additional.as_deref() {
                Some(values) => format!("map[string]{}", self.go_type(values)),
                None => "map[string]interface {}".to_owned(),
            },
            Ty::String if node.format.as_deref() == Some("byte") => "[]uint8".to_owned(),
            Ty::String => "string".to_owned(),
            Ty::Integer => match node.format.as_deref() {
                Some("int32") => "int32".to_owned(),
                Some("int64") => "int64".to_owned(),
                _ => "int".to_owned(),
            },
            Ty::Number => "float64".to_owned(),
            Ty::Boolean => "bool".to_owned(),
            Ty::Any => "interface {}".to_owned(),
        }
    }
}

impl Compact {
    /// The definition a `$ref` chain starting at definition `r` ends in.
    pub(crate) fn resolve_index(&self, mut r: u32) -> u32 {
        for _ in 0..16 {
            match self.defs[r as usize].node.reference {
                Some(next) => r = next,
                None => break,
            }
        }
        r
    }
}

fn short_name(def: &str) -> &str {
    def.rsplit('.').next().unwrap_or(def)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_upstream_wording() {
        let unknown = vec!["spec.foo".to_owned(), "spec.containers[0].bar".to_owned()];
        assert_eq!(
            strict_decoding_error(&unknown),
            r#"strict decoding error: unknown field "spec.foo", unknown field "spec.containers[0].bar""#
        );
        assert_eq!(
            unknown_field_warning("spec.foo"),
            r#"unknown field "spec.foo""#
        );
        assert_eq!(
            decode_error_message("Deployment", "v1", "strict decoding error: x"),
            r#"Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: x"#
        );
    }
}
