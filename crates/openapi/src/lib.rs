//! The upstream Kubernetes OpenAPI schema (kube-apiserver v1.36), embedded, and everything the
//! API server derives from it:
//!
//! - per-kind patch metadata ([`KindSchema`], an implementation of
//!   `apimachinery::patch::PatchSchema`) for strategic merge patch and server-side apply;
//! - server-side field validation ([`OpenApi::unknown_fields`], [`OpenApi::check_fields`]) with
//!   upstream's error and warning texts;
//! - the `/openapi/v3` discovery root and per-group-version documents, and `/openapi/v2` as
//!   JSON and as gnostic protobuf — the shapes kubectl 1.27–1.33 read for `apply`, `create -f`,
//!   `replace`, `edit` and `explain`.
//!
//! Memory: the document lives in the binary only gzipped (≈300 KB). Lookups use a compact
//! schema built once, lazily, from it (a few hundred KB, no descriptions). Documents are built
//! on demand — inflate, read the slices needed, serialize, drop — and never kept parsed;
//! `/openapi/v3` documents are cached gzip-compressed within a small byte budget.

mod pb;
mod schema;
mod source;
mod v2;
mod v3;
mod validate;

pub use schema::{FieldMeta, KindSchema};
pub use validate::{
    decode_error_message, strict_decoding_error, unknown_field_warning, FieldReport,
};

use schema::Compact;
use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};

/// `Content-Type` of a [`OpenApi::v2_protobuf`] response. Upstream answers with this (dotted)
/// form even when the request's `Accept` used [`V2_PROTOBUF_ACCEPT_DEPRECATED`]; Go's
/// `mime.ParseMediaType` in kubectl rejects the `@` form in a response.
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The `Accept` value kubectl sends for `/openapi/v2` (serve [`OpenApi::v2_protobuf`] for it).
pub const V2_PROTOBUF_ACCEPT_DEPRECATED: &str =
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// Upper bound on the gzip-compressed `/openapi/v3` documents kept between requests.
const V3_CACHE_BUDGET: usize = 1 << 20;

/// The embedded OpenAPI schema and the documents derived from it. Cheap to create; all state
/// is built lazily and shared behind `&self`, so one instance ([`OpenApi::global`]) serves the
/// whole process.
#[derive(Default)]
pub struct OpenApi {
    compact: OnceLock<Arc<Compact>>,
    v3_cache: Mutex<V3Cache>,
}

#[derive(Default)]
struct V3Cache {
    gzipped: HashMap<String, Arc<[u8]>>,
    bytes: usize,
}

impl std::fmt::Debug for OpenApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenApi")
            .field("compact_loaded", &self.compact.get().is_some())
            .finish_non_exhaustive()
    }
}

impl OpenApi {
    /// A fresh instance with nothing loaded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The process-wide instance.
    pub fn global() -> &'static OpenApi {
        static GLOBAL: OnceLock<OpenApi> = OnceLock::new();
        GLOBAL.get_or_init(OpenApi::new)
    }

    fn compact(&self) -> &Arc<Compact> {
        self.compact.get_or_init(|| Arc::new(Compact::load()))
    }

    /// The schema of the definition whose `x-kubernetes-group-version-kind` names this kind
    /// (`group` is `""` for the core group), e.g. `("apps", "v1", "Deployment")`.
    pub fn kind_schema(&self, group: &str, version: &str, kind: &str) -> Option<KindSchema> {
        let compact = self.compact();
        let i = compact
            .gvks
            .binary_search_by(|(g, v, k, _)| (&**g, &**v, &**k).cmp(&(group, version, kind)))
            .ok()?;
        Some(KindSchema {
            compact: Arc::clone(compact),
            def: compact.gvks[i].3,
        })
    }

    /// Paths of the fields of `obj` that `schema` does not declare, formatted as upstream's
    /// strict decoder names them (`spec.foo`, `spec.containers[0].bar`, `metadata.labelz`).
    /// `apiVersion` and `kind` are declared by every kind; `metadata` is checked as
    /// `ObjectMeta`. Format the result with [`strict_decoding_error`] for
    /// `fieldValidation=Strict` (inside [`decode_error_message`] for create/update bodies) or
    /// [`unknown_field_warning`] for `Warn`.
    pub fn unknown_fields(&self, schema: &KindSchema, obj: &serde_json::Value) -> Vec<String> {
        validate::check(schema, obj).unknown
    }

    /// Unknown fields and JSON type mismatches of `obj` against `schema`.
    pub fn check_fields(&self, schema: &KindSchema, obj: &serde_json::Value) -> FieldReport {
        validate::check(schema, obj)
    }

    /// Every discovery key the embedded document has paths for: `api/v1`,
    /// `apis/apps/v1`, …, plus `api`, `apis`, `apis/<group>`, `version`, `logs` and the OIDC
    /// endpoints.
    pub fn document_keys(&self) -> Vec<String> {
        self.compact()
            .gv_keys
            .iter()
            .map(|k| k.to_string())
            .collect()
    }

    /// The `/openapi/v3` discovery document for the served keys (`"api/v1"`,
    /// `"apis/apps/v1"`, …): `{"paths":{"api/v1":{"serverRelativeURL":"/openapi/v3/api/v1?hash=<HEX>"}}}`.
    /// Keys the embedded document has no paths for are left out.
    pub fn v3_root(&self, served: &[&str]) -> serde_json::Value {
        let compact = self.compact();
        let mut keys: Vec<String> = served
            .iter()
            .filter(|s| compact.gv_keys.binary_search_by(|k| (**k).cmp(s)).is_ok())
            .map(|s| s.to_string())
            .collect();
        keys.sort();
        keys.dedup();
        v3::root(keys.into_iter())
    }

    /// The `hash` (and `ETag`) of the `/openapi/v3/<gv_path>` document, as put in
    /// [`OpenApi::v3_root`]. Upstream answers a request whose `hash` differs with a 301 to the
    /// current URL, and one that matches with `Cache-Control: public, immutable`.
    pub fn v3_hash(&self, gv_path: &str) -> Option<String> {
        let compact = self.compact();
        compact
            .gv_keys
            .binary_search_by(|k| (**k).cmp(gv_path))
            .ok()
            .map(|_| source::document_hash(gv_path))
    }

    /// The OpenAPI 3.0 document (JSON) for one discovery key (`api/v1`, `apis/apps/v1`, …):
    /// its paths and every schema they reach. `None` for unknown keys.
    pub fn v3_group_version(&self, gv_path: &str) -> Option<Vec<u8>> {
        let gz = self.v3_group_version_gzip(gv_path)?;
        let mut out = Vec::with_capacity(gz.len() * 8);
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .expect("cached document is valid gzip");
        Some(out)
    }

    /// [`OpenApi::v3_group_version`], gzip-compressed (for `Content-Encoding: gzip` clients).
    pub fn v3_group_version_gzip(&self, gv_path: &str) -> Option<Arc<[u8]>> {
        if let Some(hit) = self.v3_cache.lock().ok()?.gzipped.get(gv_path) {
            return Some(Arc::clone(hit));
        }
        // Compressed while written, so the uncompressed document never exists here.
        // (Buffered: the encoder compresses on every write, and serde writes in small pieces.)
        let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, enc);
        let found = source::with_doc(|doc| v3::group_version(doc, gv_path, &mut out))
            .expect("writing to a Vec cannot fail");
        if !found {
            return None;
        }
        let enc = out.into_inner().expect("writing to a Vec cannot fail");
        let gz: Arc<[u8]> = enc.finish().expect("writing to a Vec cannot fail").into();
        let mut cache = self.v3_cache.lock().ok()?;
        if cache.bytes + gz.len() <= V3_CACHE_BUDGET {
            cache.bytes += gz.len();
            cache.gzipped.insert(gv_path.to_owned(), Arc::clone(&gz));
        }
        Some(gz)
    }

    /// Builds the v3 document without touching the cache.
    pub fn v3_group_version_uncached(&self, gv_path: &str) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        source::with_doc(|doc| v3::group_version(doc, gv_path, &mut out))
            .expect("writing to a Vec cannot fail")
            .then_some(out)
    }

    /// `/openapi/v2` as JSON: the embedded upstream document, unchanged.
    pub fn v2_json(&self) -> Vec<u8> {
        source::inflate()
    }

    /// `/openapi/v2` as JSON narrowed to the served group-versions (their paths, the
    /// discovery and non-API paths, and the definitions those reach).
    pub fn v2_json_served(&self, served: &[&str]) -> Vec<u8> {
        source::with_doc(|doc| v2::View::new(doc, Some(served)).to_json())
    }

    /// `/openapi/v2` as gnostic `openapi.v2.Document` protobuf, for `Accept`
    /// [`V2_PROTOBUF_ACCEPT_DEPRECATED`] or its dotted form; respond with
    /// [`V2_PROTOBUF_CONTENT_TYPE`].
    pub fn v2_protobuf(&self) -> Vec<u8> {
        source::with_doc(|doc| v2::View::new(doc, None).to_protobuf())
    }

    /// [`OpenApi::v2_protobuf`] narrowed to the served group-versions.
    pub fn v2_protobuf_served(&self, served: &[&str]) -> Vec<u8> {
        source::with_doc(|doc| v2::View::new(doc, Some(served)).to_protobuf())
    }

    /// A stable `ETag` value for the `/openapi/v2` document (`served` as passed to the
    /// `_served` variants, `None` for the whole document).
    pub fn v2_etag(&self, served: Option<&[&str]>) -> String {
        let mut what = String::from("v2");
        if let Some(served) = served {
            let mut s: Vec<&str> = served.to_vec();
            s.sort_unstable();
            for key in s {
                what.push('\n');
                what.push_str(key);
            }
        }
        source::document_hash(&what)
    }
}
