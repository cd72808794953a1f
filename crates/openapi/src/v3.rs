//! `/openapi/v3`: the discovery root and the per-group-version OpenAPI 3.0 documents, derived
//! from the embedded v2 document the way kube-openapi's builder3 shapes them.
//!
//! Per operation: non-body parameters carry their type under `schema`; the body parameter
//! becomes `requestBody` with one `content` entry per `consumes` media type; responses get one
//! `content` entry per `produces` media type; `schemes`/`consumes`/`produces` go away.
//! Per schema: `#/definitions/X` becomes `#/components/schemas/X`, and a `$ref` with siblings
//! (a property's description) is wrapped as `allOf: [{$ref}]` beside them. Descriptions and
//! `x-kubernetes-*` extensions are kept (`kubectl explain` and client-side apply read them).

use crate::source::{self, Doc};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::io::{self, Write};

const V2_PREFIX: &str = "#/definitions/";
const V3_PREFIX: &str = "#/components/schemas/";
const METHODS: [&str; 7] = ["get", "put", "post", "delete", "options", "head", "patch"];

/// Writes the v3 document (JSON) for one discovery key (`api/v1`, `apis/apps/v1`,
/// `version`, …) to `out`. `false` (and nothing written) when the v2 document has no path
/// under that key.
///
/// Streams: each path item and schema is parsed, converted and serialized on its own, so the
/// peak is the raw v2 slices plus the output, never the whole document as a `Value`.
pub(crate) fn group_version(doc: &Doc<'_>, key: &str, out: &mut impl Write) -> io::Result<bool> {
    let paths: Vec<_> = doc
        .paths
        .iter()
        .filter(|(p, _)| source::gv_key(p) == key)
        .map(|(p, v)| (p.as_str(), &**v))
        .collect();
    if paths.is_empty() {
        return Ok(false);
    }
    let (schemas, _) = source::reachable(doc, &paths);

    let mut unused = BTreeSet::new();
    out.write_all(b"{\"components\":{\"schemas\":{")?;
    for (i, name) in schemas.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        let schema = convert_schema(source::parse(doc.definitions[*name]), &mut unused);
        entry(out, name, &schema)?;
    }
    out.write_all(b"}")?;
    if let Some(raw) = &doc.security_definitions {
        // `apiKey` security schemes have the same shape in v2 and v3.
        out.write_all(b",\"securitySchemes\":")?;
        out.write_all(raw.get().as_bytes())?;
    }
    out.write_all(b"},\"info\":")?;
    out.write_all(doc.info.get().as_bytes())?;
    out.write_all(b",\"openapi\":\"3.0.0\",\"paths\":{")?;
    for (i, (path, raw)) in paths.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        let item = convert_path_item(doc, source::parse(raw), &mut unused);
        entry(out, path, &item)?;
    }
    out.write_all(b"}}")?;
    Ok(true)
}

/// Writes `"key":value`.
fn entry(out: &mut impl Write, key: &str, value: &Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, key)?;
    out.write_all(b":")?;
    serde_json::to_writer(&mut *out, value)?;
    Ok(())
}

fn convert_path_item(doc: &Doc<'_>, item: Value, refs: &mut BTreeSet<String>) -> Value {
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
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn convert_operation(doc: &Doc<'_>, op: Value, refs: &mut BTreeSet<String>) -> Value {
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
    doc: &Doc<'_>,
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
        assert_eq!(
            refs.into_iter().collect::<Vec<_>>(),
            ["a.Item", "a.ObjectMeta"]
        );
    }
}
