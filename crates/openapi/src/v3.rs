//! `/openapi/v3`: the discovery root and the per-group-version OpenAPI 3.0 documents, derived
//! from the embedded v2 document the way kube-openapi's builder3 shapes them.
//!
//! Per operation: non-body parameters carry their type under `schema`; the body parameter
//! becomes `requestBody` with one `content` entry per `consumes` media type; responses get one
//! `content` entry per `produces` media type; `schemes`/`consumes`/`produces` go away.
//! Per schema: `#/definitions/X` becomes `#/components/schemas/X`, and a `$ref` with siblings
//! (a property's description) is wrapped as `allOf: [{$ref}]` beside them. Descriptions and
//! `x-kubernetes-*` extensions are kept (`kubectl explain` and client-side apply read them).

use crate::source::{self, RawDoc};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

const V2_PREFIX: &str = "#/definitions/";
const V3_PREFIX: &str = "#/components/schemas/";
const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

/// Builds the v3 document for one discovery key (`api/v1`, `apis/apps/v1`, `version`, …).
/// `None` when the v2 document has no path under that key.
pub(crate) fn group_version(doc: &RawDoc<'_>, key: &str) -> Option<Value> {
    let mut refs = BTreeSet::new();
    let mut paths = Map::new();
    for (path, raw) in &doc.paths {
        if source::gv_key(path) != key {
            continue;
        }
        let item = source::parse(raw);
        paths.insert((*path).to_owned(), convert_path_item(doc, item, &mut refs));
    }
    if paths.is_empty() {
        return None;
    }

    // Every definition reachable from the operations, converted as it is reached.
    let mut schemas = Map::new();
    let mut pending: Vec<String> = refs.into_iter().collect();
    while let Some(name) = pending.pop() {
        if schemas.contains_key(&name) {
            continue;
        }
        let Some(raw) = doc.definitions.get(name.as_str()) else {
            continue;
        };
        let mut found = BTreeSet::new();
        let schema = convert_schema(source::parse(raw), &mut found);
        pending.extend(found.into_iter().filter(|r| !schemas.contains_key(r)));
        schemas.insert(name, schema);
    }

    let mut components = Map::new();
    components.insert("schemas".into(), Value::Object(schemas));
    if let Some(raw) = doc.security_definitions {
        components.insert("securitySchemes".into(), source::parse(raw));
    }
    let mut root = Map::new();
    root.insert("components".into(), Value::Object(components));
    root.insert("info".into(), source::parse(doc.info));
    root.insert("openapi".into(), json!("3.0.0"));
    root.insert("paths".into(), Value::Object(paths));
    Some(Value::Object(root))
}

fn convert_path_item(doc: &RawDoc<'_>, item: Value, refs: &mut BTreeSet<String>) -> Value {
    let Value::Object(item) = item else {
        return item;
    };
    let mut out = Map::new();
    for (key, value) in item {
        if key == "parameters" {
            let params = convert_parameters(doc, value, refs, &mut Map::new(), &[]);
            if !params.is_empty() {
                out.insert(key, Value::Array(params));
            }
        } else if METHODS.contains(&key.as_str()) {
            out.insert(key, convert_operation(doc, value, refs));
        } else {
            out.insert(key, value);
        }
    }
    Value::Object(out)
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default()
}

fn convert_operation(doc: &RawDoc<'_>, op: Value, refs: &mut BTreeSet<String>) -> Value {
    let Value::Object(mut op) = op else {
        return op;
    };
    let consumes = string_list(op.remove("consumes").as_ref());
    let produces = string_list(op.remove("produces").as_ref());
    op.remove("schemes");
    let mut out = Map::new();
    for (key, value) in op {
        match key.as_str() {
            "parameters" => {
                let params = convert_parameters(doc, value, refs, &mut out, &consumes);
                if !params.is_empty() {
                    out.insert(key, Value::Array(params));
                }
            }
            "responses" => {
                let Value::Object(responses) = value else {
                    continue;
                };
                let converted = responses
                    .into_iter()
                    .map(|(code, resp)| (code, convert_response(resp, &produces, refs)))
                    .collect();
                out.insert(key, Value::Object(converted));
            }
            _ => {
                out.insert(key, value);
            }
        }
    }
    Value::Object(out)
}

/// Converts a parameter list, inlining `#/parameters/…` references. A body parameter becomes
/// `requestBody` in `op`.
fn convert_parameters(
    doc: &RawDoc<'_>,
    params: Value,
    refs: &mut BTreeSet<String>,
    op: &mut Map<String, Value>,
    consumes: &[String],
) -> Vec<Value> {
    let Value::Array(params) = params else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for param in params {
        let param = match param.get("$ref").and_then(Value::as_str) {
            Some(r) => match r
                .strip_prefix("#/parameters/")
                .and_then(|name| doc.parameters.get(name))
            {
                Some(raw) => source::parse(raw),
                None => continue,
            },
            None => param,
        };
        let Value::Object(mut param) = param else {
            continue;
        };
        if param.get("in").and_then(Value::as_str) == Some("body") {
            let schema = convert_schema(param.remove("schema").unwrap_or(json!({})), refs);
            let content: Map<String, Value> = consumes
                .iter()
                .map(|m| (m.clone(), json!({ "schema": schema })))
                .collect();
            let mut body = Map::new();
            body.insert("content".into(), Value::Object(content));
            if param.get("required") == Some(&Value::Bool(true)) {
                body.insert("required".into(), Value::Bool(true));
            }
            op.insert("requestBody".into(), Value::Object(body));
            continue;
        }
        let mut converted = Map::new();
        let mut schema = Map::new();
        for (key, value) in param {
            match key.as_str() {
                "name" | "in" | "description" | "required" | "allowEmptyValue" => {
                    converted.insert(key, value);
                }
                k if k.starts_with("x-") => {
                    converted.insert(key, value);
                }
                "collectionFormat" => {}
                _ => {
                    schema.insert(key, value);
                }
            }
        }
        converted.insert("schema".into(), Value::Object(schema));
        out.push(Value::Object(converted));
    }
    out
}

fn convert_response(resp: Value, produces: &[String], refs: &mut BTreeSet<String>) -> Value {
    let Value::Object(mut resp) = resp else {
        return resp;
    };
    if let Some(schema) = resp.remove("schema") {
        let schema = convert_schema(schema, refs);
        let content: Map<String, Value> = produces
            .iter()
            .map(|m| (m.clone(), json!({ "schema": schema })))
            .collect();
        resp.insert("content".into(), Value::Object(content));
    }
    Value::Object(resp)
}

/// Converts one v2 schema to v3 in place, collecting the definitions it references.
pub(crate) fn convert_schema(schema: Value, refs: &mut BTreeSet<String>) -> Value {
    let Value::Object(mut map) = schema else {
        return schema;
    };
    for key in ["properties", "patternProperties", "definitions"] {
        if let Some(Value::Object(props)) = map.get_mut(key) {
            for value in props.values_mut() {
                *value = convert_schema(value.take(), refs);
            }
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(value) = map.get_mut(key) {
            *value = match value.take() {
                Value::Array(list) => {
                    Value::Array(list.into_iter().map(|s| convert_schema(s, refs)).collect())
                }
                other => convert_schema(other, refs),
            };
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(list)) = map.get_mut(key) {
            for value in list.iter_mut() {
                *value = convert_schema(value.take(), refs);
            }
        }
    }
    if let Some(Value::String(r)) = map.remove("$ref") {
        let target = match r.strip_prefix(V2_PREFIX) {
            Some(name) => {
                refs.insert(name.to_owned());
                format!("{V3_PREFIX}{name}")
            }
            None => r,
        };
        let reference = json!({ "$ref": target });
        if map.is_empty() {
            return reference;
        }
        map.insert("allOf".into(), Value::Array(vec![reference]));
    }
    Value::Object(map)
}

/// The `/openapi/v3` discovery document for the given keys.
pub(crate) fn root(keys: impl Iterator<Item = String>) -> Value {
    let paths: Map<String, Value> = keys
        .map(|key| {
            let url = format!("/openapi/v3/{key}?hash={}", source::document_hash(&key));
            (key, json!({ "serverRelativeURL": url }))
        })
        .collect();
    json!({ "paths": paths })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_with_description_is_wrapped_in_all_of() {
        let mut refs = BTreeSet::new();
        let v = convert_schema(
            json!({"properties": {
                "metadata": {"$ref": "#/definitions/a.ObjectMeta", "description": "d"},
                "items": {"type": "array", "items": {"$ref": "#/definitions/a.Item"}}
            }}),
            &mut refs,
        );
        assert_eq!(
            v,
            json!({"properties": {
                "metadata": {"allOf": [{"$ref": "#/components/schemas/a.ObjectMeta"}], "description": "d"},
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/a.Item"}}
            }})
        );
        assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["a.Item", "a.ObjectMeta"]);
    }
}
