//! Decodes Kubernetes protobuf request bodies into the JSON objects the API server handles.
//!
//! kubectl's typed-clientset writes (`kubectl create configmap|secret|deployment|…`,
//! `auth can-i`, `auth whoami`, `create token`) send
//! `Content-Type: application/vnd.kubernetes.protobuf`: the 4-byte magic `k8s\0` followed by a
//! `runtime.Unknown` {1: TypeMeta{apiVersion, kind}, 2: raw object bytes, 3: contentEncoding,
//! 4: contentType}. [`decode`] turns such a body into exactly the JSON upstream would produce
//! for the decoded Go object, so the rest of the server only ever sees JSON.
//!
//! The decoder is generic: a table generated from the k8s-pb crate sources and the upstream
//! OpenAPI schema (see `gen/generate.py`) gives every message's fields by tag, JSON name and
//! wire kind. Regenerate with `python3 crates/protobuf-json/gen/generate.py` from the workspace
//! root. Guarantees:
//! * never panics on any input; every malformed byte is a [`DecodeError`] naming its offset;
//! * field names, `int64` as numbers, `[]byte` as base64, Time/MicroTime as RFC 3339 (UTC),
//!   Quantity as its string, IntOrString as number or string, RawExtension as embedded JSON,
//!   Duration as a Go duration string, maps as objects, Go embedded structs flattened;
//! * the returned object carries `apiVersion` and `kind` from the envelope. `metadata.namespace`
//!   is not in kubectl's bodies: the caller fills it from the URL.

mod decode;
mod format;
#[rustfmt::skip]
mod generated;
mod schema;
mod wire;

use serde_json::Value;

/// The 4 bytes every Kubernetes protobuf body starts with.
pub const MAGIC: [u8; 4] = *b"k8s\0";

/// The media type of Kubernetes protobuf bodies.
pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Why a protobuf body could not be turned into JSON.
///
/// HTTP mapping (see [`DecodeError::status_code`]): [`DecodeError::UnknownKind`] is
/// `415 UnsupportedMediaType` (the envelope is fine, but this server cannot read that type as
/// protobuf; the client may send JSON instead); everything else is `400 BadRequest`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("body does not start with the Kubernetes protobuf magic \"k8s\\x00\"")]
    MissingMagic,
    #[error("truncated varint at offset {offset}")]
    TruncatedVarint { offset: usize },
    #[error("varint longer than 10 bytes at offset {offset}")]
    VarintOverflow { offset: usize },
    #[error("truncated field at offset {offset}: needs {needed} bytes, {available} left")]
    Truncated {
        offset: usize,
        needed: u64,
        available: usize,
    },
    #[error("invalid field number {tag} at offset {offset}")]
    InvalidFieldNumber { tag: u64, offset: usize },
    #[error("invalid wire type {wire_type} at offset {offset}")]
    InvalidWireType { wire_type: u8, offset: usize },
    #[error("group for field {tag} is not terminated (offset {offset})")]
    UnterminatedGroup { tag: u32, offset: usize },
    #[error("unexpected end-group for field {tag} at offset {offset}")]
    UnexpectedEndGroup { tag: u32, offset: usize },
    #[error("field {message}.{field} (tag {tag}) has wire type {found} at offset {offset}, which does not match its declared type")]
    WireTypeMismatch {
        message: &'static str,
        field: &'static str,
        tag: u32,
        found: &'static str,
        offset: usize,
    },
    #[error("map entry field has wire type {found} at offset {offset}, which does not match its declared type")]
    MapEntryWireType { found: &'static str, offset: usize },
    #[error("double at offset {offset} is NaN or infinite, which JSON cannot represent")]
    NonFiniteDouble { offset: usize },
    #[error("embedded raw object at offset {offset} is not valid JSON: {reason}")]
    InvalidEmbeddedJson { offset: usize, reason: String },
    #[error("messages nested deeper than {max} levels (offset {offset})", max = decode::MAX_DEPTH)]
    TooDeep { offset: usize },
    #[error("protobuf envelope has no apiVersion/kind (runtime.Unknown.typeMeta)")]
    MissingTypeMeta,
    #[error("unsupported contentEncoding {0:?} in protobuf envelope")]
    UnsupportedContentEncoding(String),
    #[error("no kind \"{kind}\" is registered for version \"{api_version}\" (protobuf kind \"{api_version}, Kind={kind}\")")]
    UnknownKind { api_version: String, kind: String },
}

impl DecodeError {
    /// The HTTP status the API server answers with: 415 for an unknown kind, else 400.
    pub fn status_code(&self) -> u16 {
        match self {
            DecodeError::UnknownKind { .. } => 415,
            _ => 400,
        }
    }
}

/// Whether `body` is a Kubernetes protobuf envelope (starts with `k8s\0`).
pub fn is_protobuf(body: &[u8]) -> bool {
    body.starts_with(&MAGIC)
}

/// Decodes an envelope into (apiVersion, kind, JSON object with apiVersion/kind set), exactly
/// the JSON upstream would produce for the decoded Go object.
pub fn decode(body: &[u8]) -> Result<(String, String, Value), DecodeError> {
    decode_envelope(body, 0, 0)
}

/// Decodes the bare protobuf of an object (no magic, no `runtime.Unknown`) of the given
/// apiVersion and kind; the result has `apiVersion` and `kind` set.
pub fn decode_object(api_version: &str, kind: &str, raw: &[u8]) -> Result<Value, DecodeError> {
    decode_raw(api_version, kind, raw, 0, 0)
}

/// Whether [`decode`] knows the message for this apiVersion and kind.
pub fn is_known_kind(api_version: &str, kind: &str) -> bool {
    schema::kind_message(api_version, kind).is_some()
}

pub(crate) fn decode_envelope(
    body: &[u8],
    base: usize,
    depth: usize,
) -> Result<(String, String, Value), DecodeError> {
    if !is_protobuf(body) {
        return Err(DecodeError::MissingMagic);
    }
    let mut r = wire::Reader::new(&body[MAGIC.len()..], base + MAGIC.len());
    let (mut api_version, mut kind) = (String::new(), String::new());
    let mut raw: (&[u8], usize) = (&[], 0);
    let mut content_encoding = String::new();
    while !r.is_empty() {
        let (tag, wt) = r.key()?;
        match (tag, wt) {
            (1, wire::LEN) => {
                let (type_meta, offset) = r.bytes()?;
                let mut tm = wire::Reader::new(type_meta, offset);
                while !tm.is_empty() {
                    match tm.key()? {
                        (1, wire::LEN) => api_version = lossy(tm.bytes()?.0),
                        (2, wire::LEN) => kind = lossy(tm.bytes()?.0),
                        (t, w) => tm.skip(t, w)?,
                    }
                }
            }
            (2, wire::LEN) => raw = r.bytes()?,
            (3, wire::LEN) => content_encoding = lossy(r.bytes()?.0),
            // 4: contentType, informational only; anything else is skipped like Go does.
            (t, w) => r.skip(t, w)?,
        }
    }
    if !content_encoding.is_empty() {
        return Err(DecodeError::UnsupportedContentEncoding(content_encoding));
    }
    if api_version.is_empty() || kind.is_empty() {
        return Err(DecodeError::MissingTypeMeta);
    }
    let value = decode_raw(&api_version, &kind, raw.0, raw.1, depth)?;
    Ok((api_version, kind, value))
}

fn decode_raw(
    api_version: &str,
    kind: &str,
    raw: &[u8],
    base: usize,
    depth: usize,
) -> Result<Value, DecodeError> {
    let index =
        schema::kind_message(api_version, kind).ok_or_else(|| DecodeError::UnknownKind {
            api_version: api_version.to_string(),
            kind: kind.to_string(),
        })?;
    let mut object = match decode::message_value(index, raw, base, depth)? {
        Some(Value::Object(o)) => o,
        // Kinds are always plain messages (the generator only registers those).
        _ => serde_json::Map::new(),
    };
    object.insert("apiVersion".into(), Value::String(api_version.to_string()));
    object.insert("kind".into(), Value::String(kind.to_string()));
    Ok(Value::Object(object))
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
