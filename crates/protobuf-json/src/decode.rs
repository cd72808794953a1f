//! The schema-driven decoder: protobuf bytes of a message from the generated table → the JSON
//! value upstream's encoding/json would produce for the decoded Go object.
//!
//! Semantics, mirroring gogo-protobuf decoding followed by Go's JSON encoding:
//! * singular scalars: last occurrence wins; a zero value ("", 0, false, empty bytes) present
//!   on the wire is written only where Go would write it: for pointer fields (`replicas: 0`,
//!   `storageClassName: ""`) and fields without `omitempty`. gogo writes every non-pointer
//!   field, so `generation: 0`, `hostPort: 0`, `stdin: false` are dropped like Go's encoder
//!   does. Where the generator had no pointer information, numbers and bools are kept;
//! * singular messages: repeated occurrences merge (their encodings are concatenated, which
//!   is protobuf's merge rule); a present message is emitted even when empty (`status: {}`);
//! * repeated fields accept packed and unpacked encodings; empty lists and maps are omitted;
//! * map entries default a missing key/value to the zero value; a later duplicate key wins;
//! * unknown fields (any wire type, groups included) are skipped; a known field with the
//!   wrong wire type is an error, as in the Go decoder.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use crate::schema::{message, Card, Message, Special, Ty};
use crate::wire::{self, Reader};
use crate::DecodeError;

/// Nesting limit for messages and embedded envelopes: bounds recursion on hostile input.
/// Real objects (a CRD's JSONSchemaProps included) stay far below it.
pub(crate) const MAX_DEPTH: usize = 100;

/// What has been read for one field of a message.
enum Acc {
    Scalar(Value),
    /// Singular bytes (last wins) or message (concatenated occurrences = merge); with the
    /// absolute offset of the first occurrence, for error messages.
    Raw(Vec<u8>, usize),
    List(Vec<Value>),
    Map(Map<String, Value>),
}

fn mismatch(msg: &'static Message, idx: usize, wire_type: u8, offset: usize) -> DecodeError {
    let field = &msg.fields[idx];
    DecodeError::WireTypeMismatch {
        message: msg.name,
        field: if field.json.is_empty() {
            "(inline)"
        } else {
            field.json
        },
        tag: field.tag,
        found: wire::wire_type_name(wire_type),
        offset,
    }
}

fn number<T: Into<Number>>(v: T) -> Value {
    Value::Number(v.into())
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One scalar value whose key (with `wire_type`) was just read from `r`, or `None` if the
/// wire type does not fit `ty`.
fn scalar(ty: Ty, wire_type: u8, r: &mut Reader<'_>) -> Result<Option<Value>, DecodeError> {
    let offset = r.offset();
    Ok(Some(match (ty, wire_type) {
        // Go converts with int32(v): truncation of the (sign-extended) varint.
        (Ty::I32, wire::VARINT) => number(r.varint()? as i64 as i32),
        (Ty::I64, wire::VARINT) => number(r.varint()? as i64),
        (Ty::Bool, wire::VARINT) => Value::Bool(r.varint()? != 0),
        (Ty::F64, wire::FIXED64) => {
            let v = f64::from_bits(r.fixed64()?);
            Value::Number(Number::from_f64(v).ok_or(DecodeError::NonFiniteDouble { offset })?)
        }
        (Ty::Str, wire::LEN) => Value::String(lossy(r.bytes()?.0)),
        (Ty::Bytes, wire::LEN) => Value::String(base64(r.bytes()?.0)),
        _ => return Ok(None),
    }))
}

/// Reads all fields of `msg` from `buf` (which starts at absolute offset `base`).
fn collect(
    msg: &'static Message,
    buf: &[u8],
    base: usize,
    depth: usize,
) -> Result<Vec<Option<Acc>>, DecodeError> {
    let mut accs: Vec<Option<Acc>> = msg.fields.iter().map(|_| None).collect();
    let mut r = Reader::new(buf, base);
    while !r.is_empty() {
        let key_offset = r.offset();
        let (tag, wt) = r.key()?;
        let Some(idx) = msg.field_index(tag) else {
            r.skip(tag, wt)?;
            continue;
        };
        let field = &msg.fields[idx];
        let slot = &mut accs[idx];
        match (field.card, field.ty) {
            (Card::One | Card::Inline, Ty::M(_) | Ty::Bytes) => {
                if wt != wire::LEN {
                    return Err(mismatch(msg, idx, wt, key_offset));
                }
                let (bytes, offset) = r.bytes()?;
                match slot {
                    Some(Acc::Raw(prev, _)) if matches!(field.ty, Ty::M(_)) => {
                        prev.extend_from_slice(bytes)
                    }
                    _ => *slot = Some(Acc::Raw(bytes.to_vec(), offset)),
                }
            }
            (Card::One | Card::Inline, ty) => {
                let v =
                    scalar(ty, wt, &mut r)?.ok_or_else(|| mismatch(msg, idx, wt, key_offset))?;
                *slot = Some(Acc::Scalar(v));
            }
            (Card::Many, ty) => {
                let list = match slot {
                    Some(Acc::List(list)) => list,
                    _ => {
                        *slot = Some(Acc::List(Vec::new()));
                        match slot {
                            Some(Acc::List(list)) => list,
                            _ => unreachable!("just set"),
                        }
                    }
                };
                match (ty, wt) {
                    (Ty::M(m), wire::LEN) => {
                        let (bytes, offset) = r.bytes()?;
                        list.push(
                            message_value(m, bytes, offset, depth + 1)?.unwrap_or(Value::Null),
                        );
                    }
                    (Ty::I32 | Ty::I64 | Ty::Bool | Ty::F64, wire::LEN) => {
                        let (bytes, offset) = r.bytes()?;
                        let packed_wt = if ty == Ty::F64 {
                            wire::FIXED64
                        } else {
                            wire::VARINT
                        };
                        let mut packed = Reader::new(bytes, offset);
                        while !packed.is_empty() {
                            // `scalar` accepts `packed_wt` for every numeric type.
                            if let Some(v) = scalar(ty, packed_wt, &mut packed)? {
                                list.push(v);
                            }
                        }
                    }
                    _ => {
                        let v = scalar(ty, wt, &mut r)?
                            .ok_or_else(|| mismatch(msg, idx, wt, key_offset))?;
                        list.push(v);
                    }
                }
            }
            (Card::Map, ty) => {
                if wt != wire::LEN {
                    return Err(mismatch(msg, idx, wt, key_offset));
                }
                let (bytes, offset) = r.bytes()?;
                let (k, v) = map_entry(ty, bytes, offset, depth)?;
                match slot {
                    Some(Acc::Map(map)) => {
                        map.insert(k, v);
                    }
                    _ => *slot = Some(Acc::Map(Map::from_iter([(k, v)]))),
                }
            }
        }
    }
    Ok(accs)
}

/// A `map<string, ty>` entry: key = 1, value = 2, missing parts default to zero values.
fn map_entry(
    ty: Ty,
    buf: &[u8],
    base: usize,
    depth: usize,
) -> Result<(String, Value), DecodeError> {
    let mut key = String::new();
    let mut value = None;
    let mut r = Reader::new(buf, base);
    while !r.is_empty() {
        let key_offset = r.offset();
        let (tag, wt) = r.key()?;
        match (tag, wt) {
            (1, wire::LEN) => key = lossy(r.bytes()?.0),
            (2, _) => {
                value = Some(match ty {
                    Ty::M(m) if wt == wire::LEN => {
                        let (bytes, offset) = r.bytes()?;
                        message_value(m, bytes, offset, depth + 1)?.unwrap_or(Value::Null)
                    }
                    _ => scalar(ty, wt, &mut r)?.ok_or(DecodeError::MapEntryWireType {
                        found: wire::wire_type_name(wt),
                        offset: key_offset,
                    })?,
                });
            }
            (1, _) => {
                return Err(DecodeError::MapEntryWireType {
                    found: wire::wire_type_name(wt),
                    offset: key_offset,
                })
            }
            _ => r.skip(tag, wt)?,
        }
    }
    let value = match value {
        Some(v) => v,
        None => match ty {
            Ty::Str | Ty::Bytes => Value::String(String::new()),
            Ty::I32 | Ty::I64 => number(0),
            Ty::F64 => number(0),
            Ty::Bool => Value::Bool(false),
            Ty::M(m) => message_value(m, &[], base, depth + 1)?.unwrap_or(Value::Null),
        },
    };
    Ok((key, value))
}

/// The JSON value of message `index` encoded in `buf`; `None` when Go would write nothing
/// useful (zero Time, empty RawExtension), so the caller omits the property.
pub(crate) fn message_value(
    index: u16,
    buf: &[u8],
    base: usize,
    depth: usize,
) -> Result<Option<Value>, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep { offset: base });
    }
    let msg = message(index);
    let accs = collect(msg, buf, base, depth)?;
    let get = |tag: u32| msg.field_index(tag).and_then(|i| accs[i].as_ref());
    let int = |tag: u32| match get(tag) {
        Some(Acc::Scalar(Value::Number(n))) => n.as_i64().unwrap_or(0),
        _ => 0,
    };
    let string = |tag: u32| match get(tag) {
        Some(Acc::Scalar(Value::String(s))) => Some(s.clone()),
        _ => None,
    };
    let list = |tag: u32| match get(tag) {
        Some(Acc::List(l)) if !l.is_empty() => Some(Value::Array(l.clone())),
        _ => None,
    };
    let sub = |tag: u32| -> Result<Option<Value>, DecodeError> {
        let Some(i) = msg.field_index(tag) else {
            return Ok(None);
        };
        match (&accs[i], msg.fields[i].ty) {
            (Some(Acc::Raw(bytes, offset)), Ty::M(m)) => {
                message_value(m, bytes, *offset, depth + 1)
            }
            _ => Ok(None),
        }
    };
    Ok(match msg.special {
        Special::Plain => Some(Value::Object(object(msg, accs, depth)?)),
        Special::Time if buf.is_empty() => None,
        Special::Time => Some(Value::String(crate::format::rfc3339(int(1)))),
        Special::MicroTime if buf.is_empty() => None,
        Special::MicroTime => Some(Value::String(crate::format::rfc3339_micro(
            int(1),
            int(2) as i32,
        ))),
        Special::Duration => Some(Value::String(crate::format::go_duration(int(1)))),
        // Upstream re-parses and re-formats the quantity; the canonical form is left to the
        // server's quantity handling. Absent means the zero Quantity, "0".
        Special::Quantity => Some(Value::String(string(1).unwrap_or_else(|| "0".into()))),
        Special::IntOrString => Some(if int(1) == 1 {
            Value::String(string(3).unwrap_or_default())
        } else {
            number(int(2) as i32)
        }),
        Special::RawJson => match get(1) {
            Some(Acc::Raw(raw, offset)) if !raw.is_empty() => Some(raw_json(raw, *offset, depth)?),
            _ => None,
        },
        Special::StringList => Some(list(1).unwrap_or(Value::Array(Vec::new()))),
        Special::PropsOrArray => match list(2) {
            Some(l) => Some(l),
            None => sub(1)?,
        },
        Special::PropsOrBool => match sub(2)? {
            Some(schema) => Some(schema),
            None => Some(Value::Bool(matches!(
                get(1),
                Some(Acc::Scalar(Value::Bool(true)))
            ))),
        },
        Special::PropsOrStringArray => match list(2) {
            Some(l) => Some(l),
            None => sub(1)?,
        },
    })
}

/// Embedded raw bytes: JSON as is, or a nested `k8s\0` envelope decoded recursively.
fn raw_json(raw: &[u8], offset: usize, depth: usize) -> Result<Value, DecodeError> {
    if crate::is_protobuf(raw) {
        return crate::decode_envelope(raw, offset, depth + 1).map(|(_, _, v)| v);
    }
    serde_json::from_slice(raw).map_err(|e| DecodeError::InvalidEmbeddedJson {
        offset,
        reason: e.to_string(),
    })
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    }
}

fn object(
    msg: &'static Message,
    accs: Vec<Option<Acc>>,
    depth: usize,
) -> Result<Map<String, Value>, DecodeError> {
    let mut out = Map::new();
    let mut inlined = Vec::new();
    for (field, acc) in msg.fields.iter().zip(accs) {
        let Some(acc) = acc else { continue };
        let value = match acc {
            Acc::Scalar(v) if !field.keep_zero && is_zero(&v) => continue,
            Acc::Scalar(v) => v,
            Acc::Raw(bytes, offset) => match field.ty {
                Ty::M(m) => match message_value(m, &bytes, offset, depth + 1)? {
                    Some(Value::Object(o)) if field.card == Card::Inline => {
                        inlined.push(o);
                        continue;
                    }
                    Some(v) => v,
                    None => continue,
                },
                _ if bytes.is_empty() && !field.keep_zero => continue,
                _ => Value::String(base64(&bytes)),
            },
            Acc::List(l) if l.is_empty() => continue,
            Acc::List(l) => Value::Array(l),
            Acc::Map(m) if m.is_empty() => continue,
            Acc::Map(m) => Value::Object(m),
        };
        out.insert(field.json.to_string(), value);
    }
    // Embedded structs' properties; the outer struct's own fields shadow them, as in Go.
    for o in inlined {
        for (k, v) in o {
            out.entry(k).or_insert(v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::message_by_name;

    /// Minimal protobuf writer for hand-built test bodies.
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn key(tag: u32, wt: u8, out: &mut Vec<u8>) {
        varint(u64::from(tag) << 3 | u64::from(wt), out);
    }
    fn len(tag: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        key(tag, wire::LEN, &mut out);
        varint(payload.len() as u64, &mut out);
        out.extend_from_slice(payload);
        out
    }
    fn int(tag: u32, v: i64) -> Vec<u8> {
        let mut out = Vec::new();
        key(tag, wire::VARINT, &mut out);
        varint(v as u64, &mut out);
        out
    }
    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }
    fn decode_as(name: &str, buf: &[u8]) -> Value {
        let idx = message_by_name(name).unwrap_or_else(|| panic!("{name}"));
        message_value(idx, buf, 0, 0).unwrap().unwrap()
    }

    #[test]
    fn decodes_the_configmap_example_from_the_wire_doc() {
        // Exactly kubectl's shape: every non-pointer ObjectMeta string written even when empty,
        // generation 0, creationTimestamp as an empty message.
        let meta = cat(&[
            len(1, b"cfg"),
            len(2, b""),
            len(3, b""),
            len(4, b""),
            len(5, b""),
            len(6, b""),
            int(7, 0),
            len(8, b""),
        ]);
        let raw = cat(&[
            len(1, &meta),
            len(2, &cat(&[len(1, b"a"), len(2, b"b")])),
            len(2, &cat(&[len(1, b"e"), len(2, b"")])),
        ]);
        let type_meta = cat(&[len(1, b"v1"), len(2, b"ConfigMap")]);
        let mut body = b"k8s\0".to_vec();
        body.extend(cat(&[
            len(1, &type_meta),
            len(2, &raw),
            len(3, b""),
            len(4, b""),
        ]));
        assert_eq!(&body[..21], b"k8s\0\x0a\x0f\x0a\x02v1\x12\x09ConfigMap");
        let (av, kind, v) = crate::decode(&body).unwrap();
        assert_eq!((av.as_str(), kind.as_str()), ("v1", "ConfigMap"));
        assert_eq!(
            v,
            serde_json::json!({"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cfg"},
                               "data":{"a":"b","e":""}})
        );
    }

    #[test]
    fn secret_bytes_map_becomes_base64() {
        let raw = cat(&[
            len(1, &len(1, b"s")),
            len(2, &cat(&[len(1, b"k"), len(2, b"v")])),
            len(2, &cat(&[len(1, b"bin"), len(2, &[0, 0xff])])),
            len(3, b"Opaque"),
        ]);
        let v = decode_as("k8s.io.api.core.v1.Secret", &raw);
        assert_eq!(
            v,
            serde_json::json!({"metadata":{"name":"s"},"data":{"k":"dg==","bin":"AP8="},"type":"Opaque"})
        );
    }

    #[test]
    fn service_target_port_int_or_string() {
        let port = |target: Vec<u8>| {
            len(
                1,
                &cat(&[len(2, b"TCP"), int(3, 80), len(4, &target), int(5, 0)]),
            )
        };
        let raw = len(
            2,
            &cat(&[
                port(cat(&[int(1, 0), int(2, 8080), len(3, b"")])),
                port(cat(&[int(1, 1), int(2, 0), len(3, b"http")])),
                len(2, &cat(&[len(1, b"app"), len(2, b"web")])),
            ]),
        );
        let v = decode_as("k8s.io.api.core.v1.Service", &raw);
        assert_eq!(
            v["spec"]["ports"],
            serde_json::json!([{"protocol":"TCP","port":80,"targetPort":8080},
                               {"protocol":"TCP","port":80,"targetPort":"http"}])
        );
        assert_eq!(v["spec"]["selector"], serde_json::json!({"app":"web"}));
    }

    #[test]
    fn zero_time_is_omitted_and_epoch_is_not() {
        let ns = |time: Vec<u8>| {
            decode_as(
                "k8s.io.api.core.v1.Namespace",
                &len(1, &cat(&[len(1, b"n"), len(8, &time)])),
            )
        };
        assert_eq!(ns(Vec::new())["metadata"], serde_json::json!({"name":"n"}));
        assert_eq!(
            ns(int(1, 0))["metadata"]["creationTimestamp"],
            "1970-01-01T00:00:00Z"
        );
        // Time drops nanoseconds, as upstream's protobuf decoding does.
        assert_eq!(
            ns(cat(&[int(1, 1_700_000_000), int(2, 5)]))["metadata"]["creationTimestamp"],
            "2023-11-14T22:13:20Z"
        );
    }

    #[test]
    fn packed_and_unpacked_repeated_scalars_and_negative_int32() {
        let mut packed = Vec::new();
        for v in [1000u64, 2000] {
            varint(v, &mut packed);
        }
        let raw = cat(&[len(4, &packed), int(4, 3000), int(2, -5)]);
        // int64 -5 and int32 -5 are both 10-byte varints.
        assert_eq!(int(2, -5).len(), 11);
        let v = decode_as("k8s.io.api.core.v1.PodSecurityContext", &raw);
        assert_eq!(
            v,
            serde_json::json!({"supplementalGroups":[1000,2000,3000],"runAsUser":-5})
        );
        // int32: ContainerPort.containerPort (tag 3) from a sign-extended varint.
        let v = decode_as("k8s.io.api.core.v1.ContainerPort", &int(3, -1));
        assert_eq!(v, serde_json::json!({"containerPort":-1}));
    }

    #[test]
    fn unknown_fields_are_skipped_and_singular_messages_merge() {
        let raw = cat(&[
            len(1, &len(1, b"n")),
            int(99, 7),
            len(100, b"junk"),
            vec![0x9d, 0x06, 1, 2, 3, 4], // field 99 fixed32
            len(1, &len(11, &cat(&[len(1, b"a"), len(2, b"b")]))), // merged into metadata
        ]);
        let v = decode_as("k8s.io.api.core.v1.Namespace", &raw);
        assert_eq!(
            v,
            serde_json::json!({"metadata":{"name":"n","labels":{"a":"b"}}})
        );
    }

    #[test]
    fn wrong_wire_type_for_a_known_field_is_an_error() {
        let idx = message_by_name("k8s.io.api.core.v1.ConfigMap").unwrap();
        let err = message_value(idx, &int(1, 3), 10, 0).unwrap_err();
        assert_eq!(
            err,
            DecodeError::WireTypeMismatch {
                message: "k8s.io.api.core.v1.ConfigMap",
                field: "metadata",
                tag: 1,
                found: "varint",
                offset: 10,
            }
        );
        assert!(err.to_string().contains("offset 10"));
        assert_eq!(err.status_code(), 400);
    }

    #[test]
    fn hostile_nesting_is_rejected_not_overflowed() {
        // JSONSchemaProps.not (tag 28) nested far beyond the limit.
        let mut buf = Vec::new();
        for _ in 0..(MAX_DEPTH + 10) {
            buf = len(28, &buf);
        }
        let idx = message_by_name(
            "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps",
        )
        .unwrap();
        assert!(matches!(
            message_value(idx, &buf, 0, 0),
            Err(DecodeError::TooDeep { .. })
        ));
    }

    #[test]
    fn envelope_errors_are_specific() {
        assert_eq!(
            crate::decode(b"{\"kind\":\"x\"}").unwrap_err(),
            DecodeError::MissingMagic
        );
        let mut body = b"k8s\0".to_vec();
        body.extend(len(2, b""));
        assert_eq!(
            crate::decode(&body).unwrap_err(),
            DecodeError::MissingTypeMeta
        );
        let mut body = b"k8s\0".to_vec();
        body.extend(cat(&[
            len(1, &cat(&[len(1, b"v1"), len(2, b"ConfigMap")])),
            len(3, b"gzip"),
        ]));
        assert_eq!(
            crate::decode(&body).unwrap_err(),
            DecodeError::UnsupportedContentEncoding("gzip".into())
        );
        let mut body = b"k8s\0".to_vec();
        body.extend([0x0a, 0x20, 0x0a]);
        assert!(matches!(
            crate::decode(&body).unwrap_err(),
            DecodeError::Truncated { offset: 5, .. }
        ));
    }

    #[test]
    fn every_prefix_of_a_real_body_fails_cleanly() {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/deployment.pb"
        ))
        .unwrap();
        assert!(crate::decode(&body).is_ok());
        for n in 0..body.len() {
            // Must return (Ok or Err), never panic; most prefixes are truncations.
            let _ = crate::decode(&body[..n]);
        }
        let mut flipped = body.clone();
        for i in 4..flipped.len() {
            flipped[i] ^= 0x5a;
            let _ = crate::decode(&flipped);
            flipped[i] ^= 0x5a;
        }
    }
}
