//! Server-side `meta.k8s.io/v1 Table` responses (what `kubectl get` asks for) and
//! `PartialObjectMetadata` views, built from the `printers` crate's columns and cells.

use serde_json::{json, Value};

/// `includeObject` query parameter of Table requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(v: Option<&str>) -> Self {
        match v {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// What the client's Accept header asks the object rendered as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum As {
    Object,
    Table,
    PartialObjectMetadata,
}

pub fn negotiate(accept: Option<&str>) -> As {
    let Some(accept) = accept else {
        return As::Object;
    };
    // The first acceptable alternative wins, as upstream's negotiation does.
    for alt in accept.split(',') {
        let alt = alt.trim();
        let media = alt.split(';').next().unwrap_or("").trim();
        if media != "application/json"
            && media != "*/*"
            && media != "application/*"
            && media != "application/vnd.kubernetes.protobuf"
            && media != "application/yaml"
        {
            continue;
        }
        let as_ = alt
            .split(';')
            .skip(1)
            .find_map(|p| p.trim().strip_prefix("as="))
            .unwrap_or("");
        return match as_ {
            "Table" => As::Table,
            "PartialObjectMetadata" | "PartialObjectMetadataList" => As::PartialObjectMetadata,
            "" => As::Object,
            _ => continue,
        };
    }
    As::Object
}

pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

pub fn partial_metadata_list(items: &[Value], list_meta: Value) -> Value {
    json!({
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "items": items.iter().map(partial_metadata).collect::<Vec<_>>(),
    })
}

/// A Table of `objs`. `headers` false leaves `columnDefinitions` empty (watch events after
/// the first, as upstream).
pub fn table(
    group: &str,
    kind: &str,
    objs: &[Value],
    list_meta: Value,
    headers: bool,
    include: IncludeObject,
) -> Value {
    let now = chrono::Utc::now();
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut row = json!({"cells": printers::cells(group, kind, o, now)});
            match include {
                IncludeObject::None => {}
                IncludeObject::Metadata => row["object"] = partial_metadata(o),
                IncludeObject::Object => row["object"] = o.clone(),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": if headers { Value::Array(printers::columns(group, kind)) } else { json!([]) },
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_kubectl_accept_headers() {
        assert_eq!(negotiate(Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")), As::Table);
        assert_eq!(negotiate(Some("application/json")), As::Object);
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf,application/json")),
            As::Object
        );
        assert_eq!(
            negotiate(Some(
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
            )),
            As::PartialObjectMetadata
        );
        assert_eq!(negotiate(None), As::Object);
    }
}
