//! Renders JSON values the way Go's `fmt` prints the `interface{}` trees upstream decodes JSON
//! into, so error messages that embed values (`map: map[image:nginx] does not contain declared
//! merge key: name`) read exactly as kube-apiserver's.

use serde_json::{Number, Value};

/// `fmt.Sprintf("%v", v)` for a JSON value decoded with integers preserved as `int64`.
pub(crate) fn v(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => number(n),
        Value::String(s) => s.clone(),
        Value::Array(items) => format!("[{}]", items.iter().map(v).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => {
            // Go prints map keys sorted; serde_json's map is already ordered by key.
            let parts: Vec<String> = m.iter().map(|(k, x)| format!("{k}:{}", v(x))).collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

fn number(n: &Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    // %v on float64 is %g with the shortest representation and an exponent from 1e21 on.
    let abs = f.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    } else {
        let s = f.to_string();
        s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
    }
}

/// `reflect.TypeOf(v).String()` for a decoded JSON value, as `mergepatch.ErrBadArgType` prints.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "%!s(<nil>)",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int64",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// The JSON kind encoding/json names in "cannot unmarshal X into Go value" errors.
pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prints_like_go_fmt() {
        let cases = [
            (
                json!({"name": "c", "ports": [80, 443], "x": null}),
                "map[name:c ports:[80 443] x:<nil>]",
            ),
            (json!(1.5), "1.5"),
            (json!(3.0), "3"),
            (json!(1e21), "1e+21"),
            (json!(true), "true"),
        ];
        for (value, want) in cases {
            assert_eq!(v(&value), want);
        }
    }
}
