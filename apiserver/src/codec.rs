//! Encoding and decoding of API objects: request bodies (JSON, YAML, Kubernetes protobuf),
//! stored values, and the `resourceVersion` the store owns.
//!
//! Stored values are compact JSON with sorted keys and without `metadata.resourceVersion`; the
//! version is the store's `mod_revision`, spliced into the bytes on the way out so a GET never
//! re-encodes the object.

use apimachinery::errors::ApiError;
use bytes::Bytes;
use serde_json::{Map, Value};

/// Largest request body accepted (upstream's 3 MiB limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
    Protobuf,
}

/// The media type of a request body, by its Content-Type (parameters ignored).
pub fn body_format(content_type: Option<&str>) -> Result<BodyFormat, ApiError> {
    let ct = content_type.unwrap_or("application/json");
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media.as_str() {
        "application/json" | "" | "*/*" => Ok(BodyFormat::Json),
        "application/yaml" | "application/x-yaml" | "text/yaml" => Ok(BodyFormat::Yaml),
        "application/vnd.kubernetes.protobuf" => Ok(BodyFormat::Protobuf),
        _ => Err(ApiError::unsupported_media_type(ct)),
    }
}

/// Decode a request body into a JSON object.
pub fn decode_body(format: BodyFormat, body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = match format {
        BodyFormat::Json => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?,
        BodyFormat::Yaml => {
            let y: Value = serde_yaml::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("error converting YAML to JSON: yaml: {e}"))
            })?;
            y
        }
        BodyFormat::Protobuf => {
            let (_, _, v) = protobuf_json::decode(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding protobuf body: {e}")))?;
            v
        }
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(format!(
            "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}",
            json_type_name(&v)
        )));
    }
    Ok(v)
}

pub fn json_type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Encode an object for storage: sorted-key compact JSON without `metadata.resourceVersion`
/// (and `selfLink`), written straight from `obj` without copying it first.
pub fn encode_for_storage(obj: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&Stored(obj)).expect("serializing a JSON value cannot fail");
    // The store keeps these bytes for the object's lifetime: drop the Vec's growth slack
    // (up to half of it), which otherwise stays allocated per stored object.
    bytes.shrink_to_fit();
    Bytes::from(bytes)
}

/// Serializes an object as its `Value` would, minus `metadata.resourceVersion` and
/// `metadata.selfLink`.
struct Stored<'a>(&'a Value);

/// Metadata keys the store never keeps.
fn unstored(key: &str) -> bool {
    key == "resourceVersion" || key == "selfLink"
}

impl serde::Serialize for Stored<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(root) = self.0 else {
            return self.0.serialize(s);
        };
        let mut map = s.serialize_map(Some(root.len()))?;
        for (k, v) in root {
            match v {
                Value::Object(meta) if k == "metadata" => {
                    map.serialize_entry(k, &StoredMeta(meta))?;
                }
                _ => map.serialize_entry(k, v)?,
            }
        }
        map.end()
    }
}

struct StoredMeta<'a>(&'a Map<String, Value>);

impl serde::Serialize for StoredMeta<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let kept = self.0.iter().filter(|(k, _)| !unstored(k));
        let mut map = s.serialize_map(Some(kept.clone().count()))?;
        for (k, v) in kept {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Decode a stored value and set its resourceVersion.
pub fn decode_stored(value: &[u8], rv: i64) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(value)
        .map_err(|e| ApiError::internal(format!("stored object is not valid JSON: {e}")))?;
    set_rv(&mut v, rv);
    Ok(v)
}

/// Splice `"resourceVersion":"<rv>"` into stored bytes without re-encoding the object.
pub fn with_rv(value: &[u8], rv: i64) -> Vec<u8> {
    let Some(at) = top_level_metadata_body(value) else {
        // Not our encoding: decode and re-encode.
        return match decode_stored(value, rv) {
            Ok(v) => serde_json::to_vec(&v).unwrap_or_default(),
            Err(_) => value.to_vec(),
        };
    };
    let rv_field = format!("\"resourceVersion\":\"{rv}\"");
    let mut out = Vec::with_capacity(value.len() + rv_field.len() + 1);
    out.extend_from_slice(&value[..at]);
    out.extend_from_slice(rv_field.as_bytes());
    if value.get(at) != Some(&b'}') {
        out.push(b',');
    }
    out.extend_from_slice(&value[at..]);
    out
}

/// What [`Encoded::Splice`] inserts before the revision's digits.
const RV_FIELD: &[u8] = b"\"resourceVersion\":\"";

/// The decimal form of a revision, as `i64::to_string` writes it, without allocating.
fn decimal(v: i64, buf: &mut [u8; 20]) -> &[u8] {
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    &buf[i..]
}

/// An object ready to be written out: either owned JSON, or stored bytes plus the
/// resourceVersion to splice in while copying them into the response (one copy, no re-encode).
#[derive(Debug, Clone)]
pub enum Encoded {
    Plain(Vec<u8>),
    Splice { value: Bytes, at: usize, rv: i64 },
}

impl Encoded {
    /// Stored bytes at revision `rv`.
    pub fn stored(value: Bytes, rv: i64) -> Self {
        match top_level_metadata_body(&value) {
            Some(at) => Self::Splice { value, at, rv },
            None => Self::Plain(with_rv(&value, rv)),
        }
    }

    /// The exact encoded length.
    pub fn len(&self) -> usize {
        match self {
            Self::Plain(v) => v.len(),
            Self::Splice { value, at, rv } => {
                let comma = usize::from(value.get(*at) != Some(&b'}'));
                value.len() + RV_FIELD.len() + decimal(*rv, &mut [0; 20]).len() + 1 + comma
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        match self {
            Self::Plain(v) => out.extend_from_slice(v),
            Self::Splice { value, at, rv } => {
                out.extend_from_slice(&value[..*at]);
                out.extend_from_slice(RV_FIELD);
                out.extend_from_slice(decimal(*rv, &mut [0; 20]));
                out.push(b'"');
                if value.get(*at) != Some(&b'}') {
                    out.push(b',');
                }
                out.extend_from_slice(&value[*at..]);
            }
        }
    }

    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            Self::Plain(v) => v.clone(),
            Self::Splice { .. } => {
                let mut out = Vec::with_capacity(self.len());
                self.write_to(&mut out);
                out
            }
        }
    }

    pub fn into_vec(self) -> Vec<u8> {
        match self {
            Self::Plain(v) => v,
            other => other.to_vec(),
        }
    }
}

/// Offset just after the `{` that opens the top-level `"metadata"` object of compact JSON.
/// Scans structure (depth and strings) so nested objects with a `metadata` key, such as a
/// ControllerRevision's `data`, are never mistaken for it.
fn top_level_metadata_body(v: &[u8]) -> Option<usize> {
    stored_metadata_body(v).or_else(|| scan_metadata_body(v))
}

/// [`top_level_metadata_body`] for the layout objects are stored in (keys sorted, so
/// `{"apiVersion":"…","kind":"…","metadata":{`), without walking the structure: two plain
/// strings and fixed text, or None for anything else.
fn stored_metadata_body(v: &[u8]) -> Option<usize> {
    fn after_plain_string(v: &[u8]) -> Option<&[u8]> {
        let end = v.iter().position(|&b| b == b'"' || b == b'\\')?;
        (v[end] == b'"').then(|| &v[end + 1..])
    }
    let rest = after_plain_string(v.strip_prefix(b"{\"apiVersion\":\"")?)?;
    let rest = after_plain_string(rest.strip_prefix(b",\"kind\":\"")?)?;
    let rest = rest.strip_prefix(b",\"metadata\":{")?;
    Some(v.len() - rest.len())
}

fn scan_metadata_body(v: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < v.len() && v[i] != b'"' {
                    if v[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if depth == 1
                    && &v[start..i.min(v.len())] == b"metadata"
                    && v.get(i + 1) == Some(&b':')
                    && v.get(i + 2) == Some(&b'{')
                {
                    return Some(i + 3);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// The parts of an object a selector reads: a tree of property names, where a leaf keeps the
/// whole value below it. Decoding through it ([`Projection::decode`]) skips everything else
/// without building it, so a watch with selectors can test each event cheaply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    children: Vec<(String, Projection)>,
}

impl Projection {
    /// Keep the value at `path` (property names from the root) and everything below it.
    pub fn add(&mut self, path: &[&str]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let i = match self.children.iter().position(|(k, _)| k == first) {
            Some(i) => {
                // An existing leaf already keeps the whole subtree.
                if self.children[i].1.children.is_empty() {
                    return;
                }
                i
            }
            None => {
                self.children
                    .push(((*first).to_string(), Projection::default()));
                self.children.len() - 1
            }
        };
        if rest.is_empty() {
            self.children[i].1.children.clear();
        } else {
            self.children[i].1.add(rest);
        }
    }

    /// Decode the kept parts of a JSON object: kept leaves as they are; objects on the way
    /// with only their kept properties; anything else on the way (a non-object where the
    /// tree expects one) as `null`, which reads the same through `Value::get`.
    pub fn decode(&self, bytes: &[u8]) -> Result<Value, serde_json::Error> {
        use serde::de::DeserializeSeed;
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let v = Proj(self).deserialize(&mut de)?;
        de.end()?;
        Ok(v)
    }
}

struct Proj<'a>(&'a Projection);

impl<'de> serde::de::DeserializeSeed<'de> for Proj<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.0.children.is_empty() {
            serde::Deserialize::deserialize(d)
        } else {
            d.deserialize_any(self)
        }
    }
}

/// Finds a property name among a projection's children without allocating it.
struct ProjKey<'a>(&'a Projection);

impl<'de> serde::de::DeserializeSeed<'de> for ProjKey<'_> {
    type Value = Option<usize>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ProjKey<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a property name")
    }
    fn visit_str<E: serde::de::Error>(self, k: &str) -> Result<Option<usize>, E> {
        Ok(self.0.children.iter().position(|(c, _)| c == k))
    }
}

impl<'de> serde::de::Visitor<'de> for Proj<'_> {
    type Value = Value;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(found) = m.next_key_seed(ProjKey(self.0))? {
            match found {
                Some(i) => {
                    let (k, child) = &self.0.children[i];
                    let v = m.next_value_seed(Proj(child))?;
                    out.insert(k.clone(), v);
                }
                None => {
                    m.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Value, A::Error> {
        while s.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

pub fn set_rv(obj: &mut Value, rv: i64) {
    if let Some(m) = meta_mut(obj) {
        m.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

/// `metadata` as a mutable map, created if missing.
pub fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let o = obj.as_object_mut()?;
    let m = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut()
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn name_of(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

pub fn labels_of(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.get("labels")?.as_object()
}

/// Parse a resourceVersion string as upstream does (a non-negative integer).
pub fn parse_rv(rv: &str) -> Result<i64, ApiError> {
    rv.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "Invalid value: {rv:?}: must be a valid resourceVersion"
        ))
    })
}

/// Build a list body by concatenating already-encoded items.
pub fn list_body(
    api_version: &str,
    list_kind: &str,
    rv: i64,
    cont: Option<&str>,
    remaining: Option<i64>,
    items: Vec<Encoded>,
) -> Vec<u8> {
    let mut body = ListBody::new(api_version, list_kind, rv, cont, remaining, items);
    let mut out = Vec::with_capacity(body.remaining);
    while let Some(chunk) = body.next_chunk() {
        out.extend_from_slice(&chunk);
    }
    out
}

/// Bytes per chunk of a streamed list body: below glibc's usual mmap threshold (128 KiB), so
/// chunk buffers come from the heap and are reused rather than mapped, faulted in and unmapped
/// per chunk, and small enough that the copy into a chunk is still in cache when TLS encrypts it.
const LIST_CHUNK: usize = 64 * 1024;

/// A list response body (`{"apiVersion":…,"items":[…],"kind":…,"metadata":{…}}`, the same bytes
/// as [`list_body`]) produced in chunks of about [`LIST_CHUNK`] bytes as the connection takes them,
/// instead of one buffer the size of the whole list: the first bytes leave while the rest is still
/// being copied, and a LIST of thousands of objects never holds a second copy of all of them.
/// Its exact length is known up front, so responses keep their `Content-Length`.
pub struct ListBody {
    head: Option<Vec<u8>>,
    items: std::iter::Peekable<std::vec::IntoIter<Encoded>>,
    first: bool,
    tail: Option<Vec<u8>>,
    /// Bytes not yet handed out.
    remaining: usize,
}

impl ListBody {
    pub fn new(
        api_version: &str,
        list_kind: &str,
        rv: i64,
        cont: Option<&str>,
        remaining: Option<i64>,
        items: Vec<Encoded>,
    ) -> Self {
        let mut meta = Map::new();
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        if let Some(c) = cont {
            meta.insert("continue".into(), Value::String(c.to_string()));
        }
        if let Some(r) = remaining {
            meta.insert("remainingItemCount".into(), Value::from(r));
        }
        let mut head = b"{\"apiVersion\":".to_vec();
        serde_json::to_writer(&mut head, api_version).expect("writing to a Vec cannot fail");
        head.extend_from_slice(b",\"items\":[");
        let mut tail = b"],\"kind\":".to_vec();
        serde_json::to_writer(&mut tail, list_kind).expect("writing to a Vec cannot fail");
        tail.extend_from_slice(b",\"metadata\":");
        serde_json::to_writer(&mut tail, &meta).expect("writing to a Vec cannot fail");
        tail.push(b'}');
        let commas = items.len().saturating_sub(1);
        let total =
            head.len() + tail.len() + commas + items.iter().map(Encoded::len).sum::<usize>();
        Self {
            head: Some(head),
            items: items.into_iter().peekable(),
            first: true,
            tail: Some(tail),
            remaining: total,
        }
    }

    /// The next chunk, or None at the end.
    fn next_chunk(&mut self) -> Option<Bytes> {
        let mut buf = self.head.take().unwrap_or_default();
        buf.reserve(LIST_CHUNK.saturating_sub(buf.len()));
        while let Some(next) = self.items.peek() {
            let need = next.len() + 1;
            if buf.len() + need > LIST_CHUNK && !buf.is_empty() {
                break;
            }
            // Only an object larger than a chunk gets a buffer of its own size.
            buf.reserve(need);
            if !self.first {
                buf.push(b',');
            }
            self.first = false;
            self.items.next().expect("peeked").write_to(&mut buf);
        }
        if self.items.peek().is_none() {
            if let Some(tail) = self.tail.take() {
                buf.extend_from_slice(&tail);
            }
        }
        if buf.is_empty() {
            return None;
        }
        self.remaining -= buf.len();
        Some(Bytes::from(buf))
    }
}

impl http_body::Body for ListBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.get_mut()
                .next_chunk()
                .map(|b| Ok(http_body::Frame::data(b))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining as u64)
    }
}

/// Now as metav1.Time writes it (`2006-01-02T15:04:05Z`). (`to_rfc3339_opts` rather than a
/// format string, which chrono parses again on every call: every write takes this.)
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Now as metav1.MicroTime writes it (`2006-01-02T15:04:05.000000Z`).
pub fn now_micro() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_are_written_as_metav1_writes_them() {
        // 2006-01-02T15:04:05Z and 2006-01-02T15:04:05.000000Z
        let shape = |s: &str| {
            s.chars()
                .map(|c| if c.is_ascii_digit() { '9' } else { c })
                .collect::<String>()
        };
        assert_eq!(shape(&now_rfc3339()), "9999-99-99T99:99:99Z");
        assert_eq!(shape(&now_micro()), "9999-99-99T99:99:99.999999Z");
    }

    #[test]
    fn projection_keeps_only_the_named_paths() {
        let obj = json!({
            "metadata": {"name": "p", "namespace": "d", "labels": {"a": "1", "b": "2"}, "managedFields": [{"manager": "m"}]},
            "spec": {"nodeName": "n", "containers": [{"name": "c"}], "hostNetwork": true},
            "status": "not-an-object",
            "type": "x"
        });
        let bytes = serde_json::to_vec(&obj).unwrap();
        let mut p = Projection::default();
        p.add(&["metadata", "labels"]);
        p.add(&["metadata", "name"]);
        p.add(&["spec", "nodeName"]);
        p.add(&["status", "phase"]);
        p.add(&["missing", "x"]);
        assert_eq!(
            p.decode(&bytes).unwrap(),
            json!({"metadata": {"name": "p", "labels": {"a": "1", "b": "2"}}, "spec": {"nodeName": "n"}, "status": null})
        );
        // A leaf wins over deeper paths added before or after it.
        let mut q = Projection::default();
        q.add(&["spec", "nodeName"]);
        q.add(&["spec"]);
        q.add(&["spec", "hostNetwork"]);
        assert_eq!(
            q.decode(&bytes).unwrap(),
            json!({"spec": obj["spec"].clone()})
        );
        assert!(q.decode(b"{\"spec\": ").is_err());
        assert_eq!(Projection::default().decode(&bytes).unwrap(), obj);
    }

    #[test]
    fn metadata_is_found_in_the_stored_layout_and_by_the_structure_scan_alike() {
        for v in [
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{}}"#,
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{}}"#,
            r#"{"apiVersion":"apps/v1","kind":"ControllerRevision","data":{"metadata":{}},"metadata":{"name":"r"}}"#,
            r#"{"apiVersion":"v\"1","kind":"Pod","metadata":{"name":"p"}}"#,
            r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p"}}"#,
            r#"{"apiVersion":"v1","kind":"Pod","spec":{"metadata":{}}}"#,
            r#"{"apiVersion":"v1","kind":"Pod""#,
        ] {
            let v = v.as_bytes();
            assert_eq!(
                top_level_metadata_body(v),
                scan_metadata_body(v),
                "{}",
                String::from_utf8_lossy(v)
            );
        }
        let v = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}"#;
        assert_eq!(stored_metadata_body(v), Some(44));
        assert_eq!(
            stored_metadata_body(br#"{"apiVersion":"v\"1","kind":"Pod","metadata":{}}"#),
            None
        );
    }

    #[test]
    fn rv_splice_matches_decode() {
        let obj = json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","resourceVersion":"9"},"data":{"metadata":{"x":"y"}}});
        let stored = encode_for_storage(&obj);
        let spliced: Value = serde_json::from_slice(&with_rv(&stored, 42)).unwrap();
        assert_eq!(spliced["metadata"]["resourceVersion"], "42");
        assert_eq!(spliced["data"]["metadata"]["x"], "y");
        assert_eq!(spliced, decode_stored(&stored, 42).unwrap());
        let nested = encode_for_storage(
            &json!({"data":{"metadata":{"a":"\\\"b"}},"kind":"ControllerRevision","metadata":{"name":"r"}}),
        );
        let v: Value = serde_json::from_slice(&with_rv(&nested, 7)).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "7");
        assert!(v["data"]["metadata"].get("resourceVersion").is_none());
        let empty = encode_for_storage(&json!({"kind":"X","metadata":{}}));
        let v: Value = serde_json::from_slice(&with_rv(&empty, 1)).unwrap();
        assert_eq!(v["metadata"]["resourceVersion"], "1");
    }

    #[test]
    fn list_body_is_valid_json() {
        let stored = encode_for_storage(&json!({"kind":"Pod","metadata":{"name":"p"}}));
        let b = list_body(
            "v1",
            "PodList",
            5,
            Some("tok"),
            Some(3),
            vec![
                Encoded::Plain(b"{\"a\":1}".to_vec()),
                Encoded::stored(stored, 9),
            ],
        );
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["items"].as_array().unwrap().len(), 2);
        assert_eq!(v["items"][1]["metadata"]["resourceVersion"], "9");
        assert_eq!(v["metadata"]["continue"], "tok");
        assert_eq!(v["metadata"]["remainingItemCount"], 3);
    }

    #[test]
    fn streamed_list_body_is_chunked_and_exactly_sized() {
        use http_body::Body;
        let big = "x".repeat(3 * LIST_CHUNK);
        let mut items: Vec<Encoded> = (0..500)
            .map(|i| {
                let v = json!({"kind":"Pod","metadata":{"name":format!("p{i}")},"spec":{"pad":"y".repeat(i * 7)}});
                Encoded::stored(encode_for_storage(&v), i as i64 * 1_000_003 - 3)
            })
            .collect();
        items.insert(
            250,
            Encoded::Plain(serde_json::to_vec(&json!({"big": big})).unwrap()),
        );
        items.push(Encoded::stored(
            encode_for_storage(&json!({"kind":"X","metadata":{}})),
            0,
        ));
        let expected: Vec<Value> = items
            .iter()
            .map(|i| serde_json::from_slice(&i.to_vec()).unwrap())
            .collect();
        assert!(items.iter().all(|i| i.len() == i.to_vec().len()));
        let mut body = ListBody::new("v1", "PodList", 77, None, None, items);
        let total = body.size_hint().exact().unwrap() as usize;
        let mut out = Vec::new();
        let mut chunks = 0;
        while let Some(c) = body.next_chunk() {
            chunks += 1;
            out.extend_from_slice(&c);
            assert_eq!(body.size_hint().exact(), Some((total - out.len()) as u64));
        }
        assert!(body.is_end_stream());
        assert_eq!(out.len(), total);
        assert!(chunks > 10, "{chunks} chunks");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["items"].as_array().unwrap(), &expected);
        assert_eq!(v["items"][1]["metadata"]["resourceVersion"], "1000000");
        assert_eq!(v["items"][0]["metadata"]["resourceVersion"], "-3");
        assert_eq!(v["metadata"], json!({"resourceVersion": "77"}));
        let empty = list_body("v1", "PodList", 5, None, None, vec![]);
        assert_eq!(
            std::str::from_utf8(&empty).unwrap(),
            r#"{"apiVersion":"v1","items":[],"kind":"PodList","metadata":{"resourceVersion":"5"}}"#
        );
    }

    #[test]
    fn stored_encoding_drops_only_resource_version_and_self_link() {
        for obj in [
            json!({"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","resourceVersion":"9","selfLink":"/x","labels":{"resourceVersion":"kept"}},"spec":{"metadata":{"resourceVersion":"nested"}}}),
            json!({"kind":"X","metadata":{"resourceVersion":"1"}}),
            json!({"kind":"X","metadata":{}}),
            json!({"kind":"X","metadata":"odd"}),
            json!({"kind":"X"}),
            json!([1, 2]),
        ] {
            let mut want = obj.clone();
            if let Some(m) = want.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("resourceVersion");
                m.remove("selfLink");
            }
            assert_eq!(encode_for_storage(&obj), serde_json::to_vec(&want).unwrap());
        }
    }

    #[test]
    fn bad_bodies_are_400() {
        assert_eq!(
            decode_body(BodyFormat::Json, b"{nope").unwrap_err().code,
            400
        );
        assert_eq!(decode_body(BodyFormat::Json, b"[1]").unwrap_err().code, 400);
        assert_eq!(
            decode_body(BodyFormat::Yaml, b"a: [").unwrap_err().code,
            400
        );
        assert_eq!(body_format(Some("text/plain")).unwrap_err().code, 415);
    }
}
