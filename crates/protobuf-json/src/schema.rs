//! The shape of the generated schema table (`generated.rs`): for every protobuf message of
//! k8s.io/api, apimachinery, apiextensions-apiserver, kube-aggregator and metrics, its fields by
//! tag with their JSON names and wire kinds, plus the apiVersion/kind → message index.
//!
//! The table is data only; `decode.rs` interprets it. Fields are sorted by tag so lookups can
//! binary-search, and `KINDS` is sorted by (apiVersion, kind).

use crate::generated::{KINDS, MESSAGES};

/// What a field holds on the wire (and so how its JSON value is produced).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    /// `string`: JSON string (lossy UTF-8, as Go's encoder does).
    Str,
    /// `bytes`: base64 JSON string.
    Bytes,
    /// `int32` varint (negative values are 10-byte sign-extended varints).
    I32,
    /// `int64` varint.
    I64,
    Bool,
    /// `double` (fixed64).
    F64,
    /// An embedded message: index into `MESSAGES`.
    M(u16),
}

/// How many values a field holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Card {
    /// Singular (`optional` in proto2); for messages repeated occurrences merge.
    One,
    /// `repeated`, packed or unpacked.
    Many,
    /// `map<string, Ty>`: entries with key = 1, value = 2; JSON object.
    Map,
    /// A Go embedded struct (`json:",inline"`): a singular message whose JSON properties are
    /// written into the parent object.
    Inline,
}

/// Messages whose JSON is not "an object of their fields" (custom MarshalJSON upstream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Special {
    Plain,
    /// metav1.Time: RFC 3339 seconds; empty message = zero time (omitted).
    Time,
    /// metav1.MicroTime: RFC 3339 with 6 fractional digits; empty = zero (omitted).
    MicroTime,
    /// metav1.Duration: Go duration string.
    Duration,
    /// resource.Quantity: its string.
    Quantity,
    /// intstr.IntOrString: number or string by `type`.
    IntOrString,
    /// runtime.RawExtension, metav1.FieldsV1, apiextensions JSON: `raw` bytes embedded as JSON.
    RawJson,
    /// A wrapper with `repeated string items = 1` that is a plain `[]string` in Go.
    StringList,
    /// apiextensions JSONSchemaPropsOrArray: schema object or array of schemas.
    PropsOrArray,
    /// apiextensions JSONSchemaPropsOrBool: schema object or bool.
    PropsOrBool,
    /// apiextensions JSONSchemaPropsOrStringArray: schema object or array of strings.
    PropsOrStringArray,
}

#[derive(Debug)]
pub(crate) struct Field {
    pub tag: u32,
    /// JSON property name; empty for `Card::Inline`.
    pub json: &'static str,
    pub ty: Ty,
    pub card: Card,
    /// Whether a zero scalar present on the wire ("", 0, false, empty bytes) is written to
    /// JSON: true for Go pointer fields (`replicas: 0`, `storageClassName: ""`) and fields
    /// without `omitempty`; false for plain `omitempty` values (`generation`, `hostPort`).
    pub keep_zero: bool,
}

#[derive(Debug)]
pub(crate) struct Message {
    /// Full proto name, e.g. `k8s.io.api.core.v1.ConfigMap`.
    pub name: &'static str,
    pub special: Special,
    pub fields: &'static [Field],
}

/// A field whose zero value Go omits (a value with `omitempty`).
pub(crate) const fn f(tag: u32, json: &'static str, ty: Ty, card: Card) -> Field {
    Field {
        tag,
        json,
        ty,
        card,
        keep_zero: false,
    }
}

/// A field whose zero value Go writes when present (a pointer, or no `omitempty`).
pub(crate) const fn k(tag: u32, json: &'static str, ty: Ty, card: Card) -> Field {
    Field {
        tag,
        json,
        ty,
        card,
        keep_zero: true,
    }
}

pub(crate) fn message(index: u16) -> &'static Message {
    &MESSAGES[usize::from(index)]
}

impl Message {
    /// Position of the field with `tag` in `fields`.
    pub(crate) fn field_index(&self, tag: u32) -> Option<usize> {
        self.fields.binary_search_by_key(&tag, |f| f.tag).ok()
    }
}

/// The message registered for `apiVersion` + `kind`.
pub(crate) fn kind_message(api_version: &str, kind: &str) -> Option<u16> {
    KINDS
        .binary_search_by(|(av, k, _)| (*av, *k).cmp(&(api_version, kind)))
        .ok()
        .map(|i| KINDS[i].2)
}

/// Index of a message by its full proto name (tests and diagnostics).
#[cfg(test)]
pub(crate) fn message_by_name(name: &str) -> Option<u16> {
    MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .ok()
        .and_then(|i| u16::try_from(i).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_sorted_for_binary_search() {
        assert!(MESSAGES.windows(2).all(|w| w[0].name < w[1].name));
        assert!(KINDS
            .windows(2)
            .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
        for m in MESSAGES.iter() {
            assert!(
                m.fields.windows(2).all(|w| w[0].tag < w[1].tag),
                "{} fields not sorted by tag",
                m.name
            );
            for f in m.fields {
                if let Ty::M(i) = f.ty {
                    assert!(usize::from(i) < MESSAGES.len());
                }
                assert_eq!(f.json.is_empty(), f.card == Card::Inline, "{}", m.name);
            }
        }
    }

    #[test]
    fn kinds_resolve_to_their_messages() {
        let cases = [
            ("v1", "ConfigMap", "k8s.io.api.core.v1.ConfigMap"),
            ("v1", "Namespace", "k8s.io.api.core.v1.Namespace"),
            ("apps/v1", "Deployment", "k8s.io.api.apps.v1.Deployment"),
            ("batch/v1", "CronJob", "k8s.io.api.batch.v1.CronJob"),
            (
                "authorization.k8s.io/v1",
                "SelfSubjectAccessReview",
                "k8s.io.api.authorization.v1.SelfSubjectAccessReview",
            ),
            (
                "authentication.k8s.io/v1",
                "TokenRequest",
                "k8s.io.api.authentication.v1.TokenRequest",
            ),
            (
                "apps/v1",
                "DeleteOptions",
                "k8s.io.apimachinery.pkg.apis.meta.v1.DeleteOptions",
            ),
            (
                "scheduling.k8s.io/v1",
                "PriorityClass",
                "k8s.io.api.scheduling.v1.PriorityClass",
            ),
            (
                "apiextensions.k8s.io/v1",
                "CustomResourceDefinition",
                "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition",
            ),
        ];
        for (av, kind, name) in cases {
            let idx = kind_message(av, kind).unwrap_or_else(|| panic!("{av} {kind}"));
            assert_eq!(message(idx).name, name);
        }
        assert_eq!(kind_message("apps/v1", "Foo"), None);
    }
}
