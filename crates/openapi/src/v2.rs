//! `/openapi/v2`: the embedded document as JSON, optionally narrowed to the served
//! group-versions, and its gnostic `openapi.v2.Document` protobuf encoding (requested as
//! `application/com.github.proto-openapi.spec.v2@v1.0+protobuf`), which kubectl ≤1.28 reads
//! for `apply` validation and `explain`.
//!
//! Both are assembled slice by slice from the raw document: the JSON form by concatenating
//! the original text of the kept paths and definitions, the protobuf form by parsing and
//! encoding one path item or definition at a time.

use crate::pb::Writer;
use crate::source::{self, Doc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The parts of the document one response carries.
pub(crate) struct View<'a> {
    pub doc: &'a Doc<'a>,
    pub paths: Vec<(&'a str, &'a RawValue)>,
    pub definitions: Vec<(&'a str, &'a RawValue)>,
    pub parameters: Vec<(&'a str, &'a RawValue)>,
}

fn is_group_version(key: &str) -> bool {
    let segments = key.split('/').count();
    (key.starts_with("api/") && segments == 2) || (key.starts_with("apis/") && segments == 3)
}

/// Whether a path with discovery key `key` belongs in a document for `served` group-versions:
/// the served group-versions themselves, the discovery endpoints of groups with a served
/// version, and the non-API paths (`/version/`, `/logs/`, OIDC).
fn keep(key: &str, served: &[&str]) -> bool {
    if served.contains(&key) {
        return true;
    }
    if is_group_version(key) {
        return false;
    }
    if key == "api" || key.starts_with("apis/") {
        let prefix = format!("{key}/");
        return served.iter().any(|s| s.starts_with(&prefix));
    }
    true
}

impl<'a> View<'a> {
    /// Everything, or only what `served` group-versions need (their paths, and the parameters
    /// and definitions those reach).
    pub(crate) fn new(doc: &'a Doc<'a>, served: Option<&[&str]>) -> Self {
        let Some(served) = served else {
            return View {
                doc,
                paths: doc.paths.iter().map(|(k, v)| (k.as_str(), &**v)).collect(),
                definitions: doc
                    .definitions
                    .iter()
                    .map(|(k, v)| (k.as_str(), &**v))
                    .collect(),
                parameters: doc
                    .parameters
                    .iter()
                    .map(|(k, v)| (k.as_str(), &**v))
                    .collect(),
            };
        };
        let paths: Vec<_> = doc
            .paths
            .iter()
            .filter(|(k, _)| keep(source::gv_key(k), served))
            .map(|(k, v)| (k.as_str(), &**v))
            .collect();
        let (definitions, parameters) = source::reachable(doc, &paths);
        let definitions = definitions
            .into_iter()
            .map(|k| (k, &*doc.definitions[k]))
            .collect();
        let parameters = parameters
            .into_iter()
            .map(|k| (k, &*doc.parameters[k]))
            .collect();
        View {
            doc,
            paths,
            definitions,
            parameters,
        }
    }

    /// The view as v2 JSON, assembled from the original text.
    pub(crate) fn to_json(&self) -> Vec<u8> {
        fn object(out: &mut Vec<u8>, entries: &[(&str, &RawValue)]) {
            out.push(b'{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k).expect("writing to a Vec cannot fail");
                out.push(b':');
                out.extend_from_slice(v.get().as_bytes());
            }
            out.push(b'}');
        }
        let mut out = Vec::with_capacity(4_400_000);
        out.extend_from_slice(b"{\"definitions\":");
        object(&mut out, &self.definitions);
        out.extend_from_slice(b",\"info\":");
        out.extend_from_slice(self.doc.info.get().as_bytes());
        out.extend_from_slice(b",\"parameters\":");
        object(&mut out, &self.parameters);
        out.extend_from_slice(b",\"paths\":");
        object(&mut out, &self.paths);
        if let Some(security) = &self.doc.security {
            out.extend_from_slice(b",\"security\":");
            out.extend_from_slice(security.get().as_bytes());
        }
        if let Some(defs) = &self.doc.security_definitions {
            out.extend_from_slice(b",\"securityDefinitions\":");
            out.extend_from_slice(defs.get().as_bytes());
        }
        out.extend_from_slice(b",\"swagger\":");
        serde_json::to_writer(&mut out, &self.doc.swagger).expect("writing to a Vec cannot fail");
        out.push(b'}');
        out
    }

    /// The view as a gnostic `openapi.v2.Document` message.
    pub(crate) fn to_protobuf(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.string(1, &self.doc.swagger);
        if let Value::Object(info) = source::parse(self.doc.info) {
            w.message(2, |m| {
                for (k, v) in &info {
                    match k.as_str() {
                        "title" => m.string(1, str_of(v)),
                        "version" => m.string(2, str_of(v)),
                        "description" => m.string(3, str_of(v)),
                        "termsOfService" => m.string(4, str_of(v)),
                        _ => extension(m, 7, k, v),
                    }
                }
            });
        }
        w.message(8, |m| {
            for (name, raw) in &self.paths {
                m.message(2, |named| {
                    named.string(1, name);
                    named.message(2, |item| path_item(item, &source::parse(raw)));
                });
            }
        });
        w.message(9, |m| {
            for (name, raw) in &self.definitions {
                m.message(1, |named| {
                    named.string(1, name);
                    named.message(2, |s| schema(s, &source::parse(raw)));
                });
            }
        });
        if !self.parameters.is_empty() {
            w.message(10, |m| {
                for (name, raw) in &self.parameters {
                    m.message(1, |named| {
                        named.string(1, name);
                        named.message(2, |p| parameter(p, &source::parse(raw)));
                    });
                }
            });
        }
        if let Some(raw) = &self.doc.security {
            if let Value::Array(reqs) = source::parse(raw) {
                for req in &reqs {
                    w.message(12, |m| security_requirement(m, req));
                }
            }
        }
        if let Some(raw) = &self.doc.security_definitions {
            if let Value::Object(defs) = source::parse(raw) {
                w.message(13, |m| {
                    for (name, def) in &defs {
                        m.message(1, |named| {
                            named.string(1, name);
                            named.message(2, |item| security_definition(item, def));
                        });
                    }
                });
            }
        }
        w.buf
    }
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// gnostic's `Any`: arbitrary values travel as YAML text; JSON is valid YAML.
fn any(w: &mut Writer, field: u32, v: &Value) {
    w.message(field, |m| m.string(2, &v.to_string()));
}

/// A `NamedAny` vendor extension, for `x-` keys only (gnostic drops the rest).
fn extension(w: &mut Writer, field: u32, key: &str, v: &Value) {
    if key.starts_with("x-") {
        w.message(field, |m| {
            m.string(1, key);
            any(m, 2, v);
        });
    }
}

fn strings(w: &mut Writer, field: u32, v: &Value) {
    match v {
        Value::Array(list) => {
            for s in list {
                w.repeated_string(field, str_of(s));
            }
        }
        Value::String(s) => w.repeated_string(field, s),
        _ => {}
    }
}

fn schema(w: &mut Writer, v: &Value) {
    let Value::Object(map) = v else {
        return;
    };
    for (k, v) in map {
        let int = || v.as_i64().unwrap_or_default();
        let num = || v.as_f64().unwrap_or_default();
        let flag = || v.as_bool().unwrap_or_default();
        match k.as_str() {
            "$ref" => w.string(1, str_of(v)),
            "format" => w.string(2, str_of(v)),
            "title" => w.string(3, str_of(v)),
            "description" => w.string(4, str_of(v)),
            "default" => any(w, 5, v),
            "multipleOf" => w.double(6, num()),
            "maximum" => w.double(7, num()),
            "exclusiveMaximum" => w.bool(8, flag()),
            "minimum" => w.double(9, num()),
            "exclusiveMinimum" => w.bool(10, flag()),
            "maxLength" => w.int64(11, int()),
            "minLength" => w.int64(12, int()),
            "pattern" => w.string(13, str_of(v)),
            "maxItems" => w.int64(14, int()),
            "minItems" => w.int64(15, int()),
            "uniqueItems" => w.bool(16, flag()),
            "maxProperties" => w.int64(17, int()),
            "minProperties" => w.int64(18, int()),
            "required" => strings(w, 19, v),
            "enum" => {
                for e in v.as_array().into_iter().flatten() {
                    any(w, 20, e);
                }
            }
            "additionalProperties" => w.message(21, |m| match v {
                Value::Bool(b) => m.bool_oneof(2, *b),
                other => m.message(1, |s| schema(s, other)),
            }),
            "type" => w.message(22, |m| strings(m, 1, v)),
            "items" => w.message(23, |m| match v {
                Value::Array(list) => {
                    for s in list {
                        m.message(1, |m| schema(m, s));
                    }
                }
                other => m.message(1, |m| schema(m, other)),
            }),
            "allOf" => {
                for s in v.as_array().into_iter().flatten() {
                    w.message(24, |m| schema(m, s));
                }
            }
            "properties" => w.message(25, |m| {
                for (name, s) in v.as_object().into_iter().flatten() {
                    m.message(1, |named| {
                        named.string(1, name);
                        named.message(2, |m| schema(m, s));
                    });
                }
            }),
            "discriminator" => w.string(26, str_of(v)),
            "readOnly" => w.bool(27, flag()),
            "example" => any(w, 30, v),
            _ => extension(w, 31, k, v),
        }
    }
}

fn path_item(w: &mut Writer, v: &Value) {
    let Value::Object(map) = v else {
        return;
    };
    for (k, v) in map {
        match k.as_str() {
            "$ref" => w.string(1, str_of(v)),
            "get" => w.message(2, |m| operation(m, v)),
            "put" => w.message(3, |m| operation(m, v)),
            "post" => w.message(4, |m| operation(m, v)),
            "delete" => w.message(5, |m| operation(m, v)),
            "options" => w.message(6, |m| operation(m, v)),
            "head" => w.message(7, |m| operation(m, v)),
            "patch" => w.message(8, |m| operation(m, v)),
            "parameters" => {
                for p in v.as_array().into_iter().flatten() {
                    w.message(9, |m| parameters_item(m, p));
                }
            }
            _ => extension(w, 10, k, v),
        }
    }
}

fn operation(w: &mut Writer, v: &Value) {
    let Value::Object(map) = v else {
        return;
    };
    for (k, v) in map {
        match k.as_str() {
            "tags" => strings(w, 1, v),
            "summary" => w.string(2, str_of(v)),
            "description" => w.string(3, str_of(v)),
            "operationId" => w.string(5, str_of(v)),
            "produces" => strings(w, 6, v),
            "consumes" => strings(w, 7, v),
            "parameters" => {
                for p in v.as_array().into_iter().flatten() {
                    w.message(8, |m| parameters_item(m, p));
                }
            }
            "responses" => w.message(9, |m| responses(m, v)),
            "schemes" => strings(w, 10, v),
            "deprecated" => w.bool(11, v.as_bool().unwrap_or_default()),
            "security" => {
                for req in v.as_array().into_iter().flatten() {
                    w.message(12, |m| security_requirement(m, req));
                }
            }
            _ => extension(w, 13, k, v),
        }
    }
}

fn responses(w: &mut Writer, v: &Value) {
    let Value::Object(map) = v else {
        return;
    };
    for (code, resp) in map {
        if code.starts_with("x-") {
            extension(w, 2, code, resp);
            continue;
        }
        w.message(1, |named| {
            named.string(1, code);
            named.message(2, |value| {
                if let Some(r) = resp.get("$ref") {
                    value.message(2, |j| j.string(1, str_of(r)));
                    return;
                }
                value.message(1, |m| {
                    for (k, v) in resp.as_object().into_iter().flatten() {
                        match k.as_str() {
                            "description" => m.string(1, str_of(v)),
                            "schema" => m.message(2, |item| item.message(1, |s| schema(s, v))),
                            _ => extension(m, 5, k, v),
                        }
                    }
                });
            });
        });
    }
}

fn parameters_item(w: &mut Writer, v: &Value) {
    match v.get("$ref") {
        Some(r) => w.message(2, |j| j.string(1, str_of(r))),
        None => w.message(1, |p| parameter(p, v)),
    }
}

/// gnostic's `Parameter`: a body parameter, or a non-body one whose sub-schema message (and
/// field numbering) depends on `in`.
fn parameter(w: &mut Writer, v: &Value) {
    let Some(map) = v.as_object() else {
        return;
    };
    let location = map.get("in").map(str_of).unwrap_or_default();
    if location == "body" {
        w.message(1, |b| {
            for (k, v) in map {
                match k.as_str() {
                    "description" => b.string(1, str_of(v)),
                    "name" => b.string(2, str_of(v)),
                    "in" => b.string(3, str_of(v)),
                    "required" => b.bool(4, v.as_bool().unwrap_or_default()),
                    "schema" => b.message(5, |s| schema(s, v)),
                    _ => extension(b, 6, k, v),
                }
            }
        });
        return;
    }
    // header=1, formData=2, query=3, path=4; query and formData have `allowEmptyValue` (5),
    // which shifts their later fields by one.
    let (variant, base) = match location {
        "header" => (1, 5),
        "formData" => (2, 6),
        "query" => (3, 6),
        _ => (4, 5),
    };
    w.message(2, |nb| {
        nb.message(variant, |s| sub_schema(s, map, base));
    });
}

fn sub_schema(w: &mut Writer, map: &Map<String, Value>, base: u32) {
    for (k, v) in map {
        let int = || v.as_i64().unwrap_or_default();
        let num = || v.as_f64().unwrap_or_default();
        let flag = || v.as_bool().unwrap_or_default();
        match k.as_str() {
            "required" => w.bool(1, flag()),
            "in" => w.string(2, str_of(v)),
            "description" => w.string(3, str_of(v)),
            "name" => w.string(4, str_of(v)),
            "allowEmptyValue" if base == 6 => w.bool(5, flag()),
            "type" => w.string(base, str_of(v)),
            "format" => w.string(base + 1, str_of(v)),
            "collectionFormat" => w.string(base + 3, str_of(v)),
            "default" => any(w, base + 4, v),
            "maximum" => w.double(base + 5, num()),
            "exclusiveMaximum" => w.bool(base + 6, flag()),
            "minimum" => w.double(base + 7, num()),
            "exclusiveMinimum" => w.bool(base + 8, flag()),
            "maxLength" => w.int64(base + 9, int()),
            "minLength" => w.int64(base + 10, int()),
            "pattern" => w.string(base + 11, str_of(v)),
            "maxItems" => w.int64(base + 12, int()),
            "minItems" => w.int64(base + 13, int()),
            "uniqueItems" => w.bool(base + 14, flag()),
            "enum" => {
                for e in v.as_array().into_iter().flatten() {
                    any(w, base + 15, e);
                }
            }
            "multipleOf" => w.double(base + 16, num()),
            _ => extension(w, base + 17, k, v),
        }
    }
}

fn security_requirement(w: &mut Writer, v: &Value) {
    for (name, scopes) in v.as_object().into_iter().flatten() {
        w.message(1, |named| {
            named.string(1, name);
            named.message(2, |arr| strings(arr, 1, scopes));
        });
    }
}

fn security_definition(w: &mut Writer, v: &Value) {
    let ty = v.get("type").map(str_of).unwrap_or_default();
    let fields: &[(&str, u32)] = match ty {
        "basic" => &[("type", 1), ("description", 2)],
        _ => &[("type", 1), ("name", 2), ("in", 3), ("description", 4)],
    };
    let variant = if ty == "basic" { 1 } else { 2 };
    w.message(variant, |m| {
        for (key, field) in fields {
            if let Some(s) = v.get(*key) {
                m.string(*field, str_of(s));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_selects_served_group_versions_and_their_discovery() {
        let served = ["api/v1", "apis/apps/v1"];
        for (key, want) in [
            ("api/v1", true),
            ("apis/apps/v1", true),
            ("apis/batch/v1", false),
            ("api", true),
            ("apis", true),
            ("apis/apps", true),
            ("apis/batch", false),
            ("version", true),
            ("logs", true),
        ] {
            assert_eq!(keep(key, &served), want, "{key}");
        }
    }
}
