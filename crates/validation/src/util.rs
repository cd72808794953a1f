//! Small helpers shared by every kind: tolerant accessors over external-JSON objects, the
//! string-syntax checks of `k8s.io/apimachinery/pkg/util/validation` (with upstream's exact
//! messages), Go-style value rendering for error messages, and quantity comparison.

use apimachinery::errors::{FieldError, FieldErrorType, Path};
use serde_json::{Map, Value};

pub(crate) type Errs = Vec<FieldError>;

// ---------------------------------------------------------------------------------------------
// Accessors: absent, null and wrongly-typed values read as "unset", like Go's zero values.

pub(crate) fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

pub(crate) fn st<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(crate) fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(crate) fn obj<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}

pub(crate) fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

pub(crate) fn boolean(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(false)
}

/// A `map[string]string` field, sorted by key (Go iterates maps randomly; we pick a stable order).
pub(crate) fn str_map(v: &Value, key: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = obj(v, key)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Whether the field is unset in Go terms for a string (absent, null or "").
pub(crate) fn unset_str(v: &Value, key: &str) -> bool {
    st(v, key).is_empty()
}

/// Sets `key` to `val` when it is absent or null.
pub(crate) fn default_field(v: &mut Value, key: &str, val: Value) {
    if let Some(m) = v.as_object_mut() {
        if m.get(key).is_none_or(Value::is_null) {
            m.insert(key.to_string(), val);
        }
    }
}

/// Sets a string field when it is absent, null or empty (Go's `if x == ""`).
pub(crate) fn default_str(v: &mut Value, key: &str, val: &str) {
    if let Some(m) = v.as_object_mut() {
        if m.get(key).and_then(Value::as_str).is_none_or(str::is_empty) {
            m.insert(key.to_string(), Value::String(val.to_string()));
        }
    }
}

/// Sets a non-pointer integer field when it is absent or zero (Go's `if x == 0`).
pub(crate) fn default_nonzero(v: &mut Value, key: &str, val: i64) {
    if let Some(m) = v.as_object_mut() {
        if m.get(key).and_then(Value::as_i64).unwrap_or(0) == 0 {
            m.insert(key.to_string(), Value::from(val));
        }
    }
}

/// The object at `key`, created as `{}` when absent or null.
pub(crate) fn ensure_obj<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    let m = v.as_object_mut()?;
    if !m.get(key).is_some_and(Value::is_object) {
        m.insert(key.to_string(), Value::Object(Map::new()));
    }
    m.get_mut(key)
}

/// Mutable access to an existing object field.
pub(crate) fn child_mut<'a>(v: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    v.get_mut(key).filter(|x| x.is_object())
}

/// Mutable access to the elements of an existing array field.
pub(crate) fn items_mut<'a>(v: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    v.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|a| a.iter_mut())
}

// ---------------------------------------------------------------------------------------------
// Error constructors beyond apimachinery's.

/// `Invalid value: <raw>: detail` where `<raw>` is Go's `%#v` rendering of a non-scalar value
/// (maps, slices, structs), which a JSON value cannot express.
pub(crate) fn invalid_raw(path: &Path, raw: &str, detail: &str) -> FieldError {
    let detail = if detail.is_empty() {
        raw.to_string()
    } else {
        format!("{raw}: {detail}")
    };
    FieldError::new(FieldErrorType::Invalid, path.as_str(), None, detail)
}

/// `Duplicate value: <raw>` for struct values.
pub(crate) fn duplicate_raw(path: &Path, raw: &str) -> FieldError {
    FieldError::new(FieldErrorType::Duplicate, path.as_str(), None, raw)
}

/// `Not found: "name"`. The value travels in the detail so the printed message carries it.
pub(crate) fn not_found(path: &Path, value: &str) -> FieldError {
    FieldError::new(
        FieldErrorType::NotFound,
        path.as_str(),
        None,
        format!("{value:?}"),
    )
}

/// `Too long: may not be more than N bytes` (apimachinery ≥ 1.32 wording).
pub(crate) fn too_long(path: &Path, max: usize) -> FieldError {
    let unit = if max == 1 { "byte" } else { "bytes" };
    FieldError::new(
        FieldErrorType::TooLong,
        path.as_str(),
        None,
        format!("may not be more than {max} {unit}"),
    )
}

/// `Too many: N: must have at most M items`.
pub(crate) fn too_many(path: &Path, actual: usize, max: usize) -> FieldError {
    FieldError::new(
        FieldErrorType::TooMany,
        path.as_str(),
        None,
        format!("{actual}: must have at most {max} items"),
    )
}

pub(crate) fn required(path: &Path) -> FieldError {
    FieldError::required(path.as_str(), "")
}

pub(crate) fn required_d(path: &Path, detail: &str) -> FieldError {
    FieldError::required(path.as_str(), detail)
}

pub(crate) fn invalid(path: &Path, value: impl Into<Value>, detail: &str) -> FieldError {
    FieldError::invalid(path.as_str(), value.into(), detail)
}

pub(crate) fn forbidden(path: &Path, detail: &str) -> FieldError {
    FieldError::forbidden(path.as_str(), detail)
}

pub(crate) fn duplicate(path: &Path, value: impl Into<Value>) -> FieldError {
    FieldError::duplicate(path.as_str(), value.into())
}

pub(crate) fn not_supported(
    path: &Path,
    value: impl Into<Value>,
    supported: &[&str],
) -> FieldError {
    FieldError::not_supported(path.as_str(), value.into(), supported)
}

pub(crate) const IMMUTABLE: &str = "field is immutable";

/// Go's `%#v` of a `map[string]string`: `map[string]string{"a":"b", "c":"d"}` (keys sorted).
pub(crate) fn go_string_map(m: &[(String, String)]) -> String {
    let inner = m
        .iter()
        .map(|(k, v)| format!("{k:?}:{v:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("map[string]string{{{inner}}}")
}

/// Go's `%#v` of a `[]string`.
pub(crate) fn go_string_slice(items: &[&str]) -> String {
    let inner = items
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!("[]string{{{inner}}}")
}

// ---------------------------------------------------------------------------------------------
// String syntax, as k8s.io/apimachinery/pkg/util/validation.

pub(crate) fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut s = format!("{msg} (e.g. ");
    for (i, ex) in examples.iter().enumerate() {
        if i > 0 {
            s.push_str(" or ");
        }
        s.push('\'');
        s.push_str(ex);
        s.push_str("', ");
    }
    s.push_str("regex used for validation is '");
    s.push_str(fmt);
    s.push_str("')");
    s
}

pub(crate) fn max_len_error(n: usize) -> String {
    format!("must be no more than {n} characters")
}

pub(crate) fn inclusive_range_error(lo: i64, hi: i64) -> String {
    format!("must be between {lo} and {hi}, inclusive")
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn is_alnum(c: u8) -> bool {
    c.is_ascii_alphanumeric()
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`
fn matches_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";

pub(crate) fn is_dns1123_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !matches_dns1123_label(s) {
        errs.push(regex_error(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
            DNS1123_LABEL_FMT,
            &["my-name", "123-abc"],
        ));
    }
    errs
}

pub(crate) fn is_dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push(max_len_error(253));
    }
    if !s.split('.').all(matches_dns1123_label) {
        errs.push(regex_error(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

pub(crate) fn is_dns1035_label(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push(max_len_error(63));
    }
    let b = s.as_bytes();
    let ok = !b.is_empty() && b[0].is_ascii_lowercase() && matches_dns1123_label(s);
    if !ok {
        errs.push(regex_error(
            "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
            "[a-z]([-a-z0-9]*[a-z0-9])?",
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn matches_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_alnum(b[0])
        && is_alnum(b[b.len() - 1])
        && b.iter()
            .all(|&c| is_alnum(c) || c == b'-' || c == b'_' || c == b'.')
}

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

pub(crate) fn is_qualified_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.len() {
        1 => parts[0],
        2 => {
            let prefix = parts[0];
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for m in is_dns1123_subdomain(prefix) {
                    errs.push(format!("prefix part {m}"));
                }
            }
            parts[1]
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63)));
    }
    if !matches_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

pub(crate) fn is_valid_label_value(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push(max_len_error(63));
    }
    if !value.is_empty() && !matches_qualified_name_part(value) {
        errs.push(regex_error(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
            "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?",
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

pub(crate) fn is_valid_port_num(port: i64) -> Vec<String> {
    if (1..=65535).contains(&port) {
        Vec::new()
    } else {
        vec![inclusive_range_error(1, 65535)]
    }
}

pub(crate) fn is_valid_port_name(port: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if port.len() > 15 {
        errs.push(max_len_error(15));
    }
    if !port.bytes().all(|c| is_lower_alnum(c) || c == b'-') || port.is_empty() {
        errs.push(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".to_string(),
        );
    }
    if !port.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".to_string());
    }
    if port.contains("--") {
        errs.push("must not contain consecutive hyphens".to_string());
    }
    if port.starts_with('-') || port.ends_with('-') {
        errs.push("must not begin or end with a hyphen".to_string());
    }
    errs
}

pub(crate) fn has_chdir_prefix(value: &str) -> Vec<String> {
    match value {
        "." => vec!["must not be '.'".to_string()],
        ".." => vec!["must not be '..'".to_string()],
        v if v.starts_with("..") => vec!["must not start with '..'".to_string()],
        _ => Vec::new(),
    }
}

pub(crate) fn is_config_map_key(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push(max_len_error(253));
    }
    if value.is_empty()
        || !value
            .bytes()
            .all(|c| is_alnum(c) || c == b'-' || c == b'_' || c == b'.')
    {
        errs.push(regex_error(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
            "[-._a-zA-Z0-9]+",
            &["key.name", "KEY_NAME", "key-name"],
        ));
    }
    errs.extend(has_chdir_prefix(value));
    errs
}

pub(crate) fn is_relaxed_env_var_name(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.is_empty() {
        errs.push("environment variable name must be non-empty".to_string());
    }
    if value
        .chars()
        .any(|c| !c.is_ascii() || c.is_ascii_control() || c == '=')
    {
        errs.push(
            "a valid environment variable name must consist only of printable ASCII characters other than '='"
                .to_string(),
        );
    }
    errs
}

pub(crate) fn is_valid_ip(value: &str) -> bool {
    value.parse::<std::net::IpAddr>().is_ok()
}

/// `path.IsValidPathSegmentName`.
pub(crate) fn is_valid_path_segment_name(name: &str, prefix: bool) -> Vec<String> {
    let mut errs = Vec::new();
    if !prefix && (name == "." || name == "..") {
        errs.push(format!("may not be '{name}'"));
    }
    for bad in ["/", "%"] {
        if name.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    errs
}

/// How an object's `metadata.name` is checked (upstream's `ValidateNameFunc`s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameRule {
    Subdomain,
    Label,
    Dns1035,
    PathSegment,
}

impl NameRule {
    /// Messages for `name`; with `prefix` (generateName) a trailing dash is tolerated.
    pub(crate) fn check(self, name: &str, prefix: bool) -> Vec<String> {
        let masked = if prefix && name.len() > 1 {
            name.strip_suffix('-').unwrap_or(name)
        } else {
            name
        };
        match self {
            NameRule::Subdomain => is_dns1123_subdomain(masked),
            NameRule::Label => is_dns1123_label(masked),
            NameRule::Dns1035 => is_dns1035_label(masked),
            NameRule::PathSegment => is_valid_path_segment_name(name, prefix),
        }
    }
}

/// `ValidateDNS1123Label`: one Invalid per message at `path`.
pub(crate) fn validate_dns1123_label(value: &str, path: &Path) -> Errs {
    is_dns1123_label(value)
        .into_iter()
        .map(|m| invalid(path, value, &m))
        .collect()
}

pub(crate) fn validate_dns1123_subdomain(value: &str, path: &Path) -> Errs {
    is_dns1123_subdomain(value)
        .into_iter()
        .map(|m| invalid(path, value, &m))
        .collect()
}

pub(crate) fn validate_nonnegative(v: &Value, key: &str, path: &Path) -> Errs {
    match int(v, key) {
        Some(n) if n < 0 => vec![invalid(
            &path.child(key),
            n,
            "must be greater than or equal to 0",
        )],
        _ => Vec::new(),
    }
}

/// `ValidatePortNumOrName` for an IntOrString.
pub(crate) fn validate_port_num_or_name(port: Option<&Value>, path: &Path) -> Errs {
    match port {
        Some(Value::Number(n)) => {
            let p = n.as_i64().unwrap_or(0);
            is_valid_port_num(p)
                .into_iter()
                .map(|m| invalid(path, p, &m))
                .collect()
        }
        Some(Value::String(s)) if !s.is_empty() => is_valid_port_name(s)
            .into_iter()
            .map(|m| invalid(path, s.as_str(), &m))
            .collect(),
        Some(Value::String(_)) => vec![required(path)],
        _ => vec![invalid(path, 0, &inclusive_range_error(1, 65535))],
    }
}

// ---------------------------------------------------------------------------------------------
// Quantities: enough of resource.Quantity to compare requests with limits.

/// The numeric value of a quantity string ("500m", "1Gi", "2e3"), or None when unparsable.
pub(crate) fn parse_quantity(q: &Value) -> Option<f64> {
    let s = match q {
        Value::String(s) => s.trim(),
        Value::Number(n) => return n.as_f64(),
        _ => return None,
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let base: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse::<i32>().ok()?),
        _ => return None,
    };
    Some(base * mult)
}

/// The quantity as upstream prints it (its canonical string for the common cases).
pub(crate) fn quantity_string(q: &Value) -> String {
    match q {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_name_messages() {
        assert!(is_qualified_name("app.kubernetes.io/name").is_empty());
        assert_eq!(
            is_qualified_name("/x"),
            vec!["prefix part must be non-empty"]
        );
        assert_eq!(
            is_qualified_name("a b")[0],
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        );
    }

    #[test]
    fn port_names() {
        assert!(is_valid_port_name("http").is_empty());
        assert_eq!(
            is_valid_port_name("8080"),
            vec!["must contain at least one letter (a-z)"]
        );
        assert_eq!(
            is_valid_port_name("a--b"),
            vec!["must not contain consecutive hyphens"]
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity(&Value::from("500m")), Some(0.5));
        assert_eq!(parse_quantity(&Value::from("1Gi")), Some(1073741824.0));
        assert_eq!(parse_quantity(&Value::from("1e3")), Some(1000.0));
        assert_eq!(parse_quantity(&Value::from("x")), None);
    }
}
