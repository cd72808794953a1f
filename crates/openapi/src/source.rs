//! The embedded upstream OpenAPI v2 document and a cheap, borrowed view of it.
//!
//! The document is kept only in its gzipped form (≈300 KB). Every consumer inflates it, reads
//! it through [`Doc`] — a map of path and definition names to *unparsed* JSON slices of the
//! inflated text — and drops it again. Nothing here ever materialises the whole document as a
//! `serde_json::Value` (≈40 MB); callers parse only the slices they need.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::OnceLock;

/// The upstream kube-apiserver v1.36 OpenAPI v2 document, gzipped.
pub(crate) static SWAGGER_GZ: &[u8] = include_bytes!("../data/swagger-v1.36.json.gz");

/// Bumped whenever a transformation in this crate changes its output, so that document hashes
/// (and therefore client caches keyed by them) change with it.
const TRANSFORM_REVISION: &str = "openapi-crate/1";

/// Top-level members of the v2 document, each entry an unparsed slice of the inflated text.
#[derive(Deserialize)]
pub(crate) struct Doc<'a> {
    pub swagger: String,
    #[serde(borrow)]
    pub info: &'a RawValue,
    #[serde(borrow)]
    pub paths: BTreeMap<String, &'a RawValue>,
    #[serde(borrow)]
    pub definitions: BTreeMap<String, &'a RawValue>,
    #[serde(borrow, default)]
    pub parameters: BTreeMap<String, &'a RawValue>,
    #[serde(borrow, default)]
    pub security: Option<&'a RawValue>,
    #[serde(borrow, default, rename = "securityDefinitions")]
    pub security_definitions: Option<&'a RawValue>,
}

/// Inflates the embedded document into one buffer.
///
/// One exact-size buffer, parsed with borrowed slices, measured lighter than parsing the gzip
/// stream into separately allocated slices: the single large block is `mmap`ed and returned
/// to the system on drop, where thousands of small ones fragment the heap.
pub(crate) fn inflate() -> Vec<u8> {
    let mut text = Vec::with_capacity(4_200_000);
    flate2::read::GzDecoder::new(SWAGGER_GZ)
        .read_to_end(&mut text)
        .expect("embedded OpenAPI document is valid gzip");
    text
}

/// Inflates and indexes the embedded document and hands it to `f`; everything is freed when
/// `f` returns.
pub(crate) fn with_doc<R>(f: impl FnOnce(&Doc<'_>) -> R) -> R {
    let text = inflate();
    let doc: Doc<'_> =
        serde_json::from_slice(&text).expect("embedded OpenAPI document has the v2 shape");
    f(&doc)
}

/// Parses one raw slice. The embedded document is known-good, so failure is a build defect.
pub(crate) fn parse(raw: &RawValue) -> serde_json::Value {
    serde_json::from_str(raw.get()).expect("embedded OpenAPI slice is valid JSON")
}

/// The discovery key upstream's `/openapi/v3` root uses for a v2 path: `api/v1` and
/// `apis/<group>/<version>` for group-versions, `api`, `apis`, `apis/<group>` for the
/// discovery endpoints, and the path itself (without slashes) for the rest (`version`, `logs`,
/// `.well-known/openid-configuration`, `openid/v1/jwks`).
pub(crate) fn gv_key(path: &str) -> &str {
    let trimmed = path.trim_start_matches('/');
    let segments = match trimmed.split('/').next() {
        Some("api") => 2,
        Some("apis") => 3,
        Some("logs") => 1,
        _ => usize::MAX,
    };
    let mut end = trimmed.len();
    for (seen, (i, _)) in trimmed.match_indices('/').enumerate() {
        if seen + 1 == segments {
            end = i;
            break;
        }
    }
    trimmed[..end].trim_end_matches('/')
}

/// Names of the definitions a raw JSON slice refers to through `#/definitions/<name>`,
/// found by scanning the text rather than parsing it.
pub(crate) fn scan_refs<'t>(text: &'t str, mut out: impl FnMut(&'t str)) {
    const MARKER: &str = "#/definitions/";
    let mut rest = text;
    while let Some(i) = rest.find(MARKER) {
        rest = &rest[i + MARKER.len()..];
        let end = rest.find('"').unwrap_or(rest.len());
        out(&rest[..end]);
        rest = &rest[end..];
    }
}

/// Names of `#/parameters/<name>` references in a raw slice.
pub(crate) fn scan_params<'t>(text: &'t str, out: &mut BTreeSet<&'t str>) {
    const MARKER: &str = "#/parameters/";
    let mut rest = text;
    while let Some(i) = rest.find(MARKER) {
        rest = &rest[i + MARKER.len()..];
        let end = rest.find('"').unwrap_or(rest.len());
        out.insert(&rest[..end]);
        rest = &rest[end..];
    }
}

/// The definitions (sorted) and `#/parameters/` entries the given raw path items reach,
/// directly or through other definitions, found by scanning text.
pub(crate) fn reachable<'a>(
    doc: &'a Doc<'_>,
    paths: &[(&'a str, &'a RawValue)],
) -> (BTreeSet<&'a str>, BTreeSet<&'a str>) {
    let mut params = BTreeSet::new();
    let mut pending = Vec::new();
    for (_, raw) in paths {
        scan_params(raw.get(), &mut params);
        scan_refs(raw.get(), |r| pending.push(r));
    }
    let params: BTreeSet<&'a str> = params
        .into_iter()
        .filter_map(|p| doc.parameters.get_key_value(p).map(|(k, _)| k.as_str()))
        .collect();
    for p in &params {
        scan_refs(doc.parameters[*p].get(), |r| pending.push(r));
    }
    let mut reached = BTreeSet::new();
    while let Some(name) = pending.pop() {
        if let Some((key, raw)) = doc.definitions.get_key_value(name) {
            if reached.insert(key.as_str()) {
                scan_refs(raw.get(), |r| pending.push(r));
            }
        }
    }
    (reached, params)
}

/// 64-bit FNV-1a, used for stable document hashes (not for security).
pub(crate) fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A digest of the embedded data and this crate's transformations, computed once.
pub(crate) fn data_digest() -> u64 {
    static DIGEST: OnceLock<u64> = OnceLock::new();
    *DIGEST.get_or_init(|| {
        let h = fnv1a(0xcbf2_9ce4_8422_2325, SWAGGER_GZ);
        fnv1a(h, TRANSFORM_REVISION.as_bytes())
    })
}

/// A stable, upper-case hex digest naming one generated document (`what` distinguishes
/// documents). 128 bits, like a truncated sha512 of upstream's `hash=` values; clients treat
/// the value as opaque.
pub(crate) fn document_hash(what: &str) -> String {
    let a = fnv1a(data_digest(), what.as_bytes());
    let b = fnv1a(a ^ 0x9e37_79b9_7f4a_7c15, what.as_bytes());
    format!("{a:016X}{b:016X}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gv_key_groups_paths_like_upstream() {
        for (path, key) in [
            ("/api/", "api"),
            ("/api/v1/", "api/v1"),
            ("/api/v1/namespaces/{namespace}/pods/{name}", "api/v1"),
            ("/apis/", "apis"),
            ("/apis/apps/", "apis/apps"),
            ("/apis/apps/v1/", "apis/apps/v1"),
            ("/apis/apps/v1/watch/deployments", "apis/apps/v1"),
            ("/version/", "version"),
            ("/logs/{logpath}", "logs"),
            ("/logs/", "logs"),
            (
                "/.well-known/openid-configuration/",
                ".well-known/openid-configuration",
            ),
            ("/openid/v1/jwks/", "openid/v1/jwks"),
        ] {
            assert_eq!(gv_key(path), key, "{path}");
        }
    }

    #[test]
    fn scan_refs_finds_every_definition_reference() {
        let mut found = Vec::new();
        scan_refs(
            r##"{"a":{"$ref":"#/definitions/x.Y"},"items":{"$ref":"#/definitions/z"}}"##,
            |r| found.push(r),
        );
        assert_eq!(found, ["x.Y", "z"]);
    }

    #[test]
    fn document_hash_is_stable_and_distinct() {
        assert_eq!(document_hash("api/v1"), document_hash("api/v1"));
        assert_ne!(document_hash("api/v1"), document_hash("apis/apps/v1"));
        assert_eq!(document_hash("api/v1").len(), 32);
    }
}
