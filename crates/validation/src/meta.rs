//! `metadata` validation, as apimachinery's `ValidateObjectMeta` / `ValidateObjectMetaUpdate`:
//! name and generateName syntax per kind, namespace syntax, labels, annotations (syntax and the
//! 256 KiB total), owner references and finalizers.

use crate::util::*;
use apimachinery::errors::Path;
use serde_json::Value;

/// Total bytes of annotation keys and values an object may carry.
pub(crate) const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

/// `ValidateLabels` for a label map found at `path` (a `map[string]string` field).
pub(crate) fn validate_labels(labels: &[(String, String)], path: &Path) -> Errs {
    let mut errs = Errs::new();
    for (k, v) in labels {
        errs.extend(
            is_qualified_name(k)
                .into_iter()
                .map(|m| invalid(path, k.as_str(), &m)),
        );
        errs.extend(
            is_valid_label_value(v)
                .into_iter()
                .map(|m| invalid(path, v.as_str(), &m)),
        );
    }
    errs
}

pub(crate) fn validate_annotations(annotations: &[(String, String)], path: &Path) -> Errs {
    let mut errs = Errs::new();
    let mut total = 0usize;
    for (k, v) in annotations {
        errs.extend(
            is_qualified_name(&k.to_lowercase())
                .into_iter()
                .map(|m| invalid(path, k.as_str(), &m)),
        );
        total += k.len() + v.len();
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

fn validate_owner_references(meta: &Value, path: &Path) -> Errs {
    let mut errs = Errs::new();
    let mut controllers = Vec::new();
    for (i, r) in arr(meta, "ownerReferences").iter().enumerate() {
        let p = path.index(i);
        if unset_str(r, "apiVersion") {
            errs.push(invalid(
                &p.child("apiVersion"),
                st(r, "apiVersion"),
                "version must not be empty",
            ));
        }
        if unset_str(r, "kind") {
            errs.push(invalid(
                &p.child("kind"),
                st(r, "kind"),
                "kind must not be empty",
            ));
        }
        if unset_str(r, "name") {
            errs.push(invalid(
                &p.child("name"),
                st(r, "name"),
                "name must not be empty",
            ));
        }
        if unset_str(r, "uid") {
            errs.push(invalid(
                &p.child("uid"),
                st(r, "uid"),
                "uid must not be empty",
            ));
        }
        if boolean(r, "controller") {
            controllers.push(format!("{}/{}", st(r, "kind"), st(r, "name")));
        }
    }
    if controllers.len() > 1 {
        errs.push(invalid(
            path,
            Value::Null,
            &format!("Only one reference can have Controller set to true. Found \"true\" in references for {}", controllers.join(" and ")),
        ));
    }
    errs
}

fn validate_finalizers(meta: &Value, path: &Path) -> Errs {
    let mut errs = Errs::new();
    let mut seen = std::collections::HashSet::new();
    for f in arr(meta, "finalizers").iter().filter_map(Value::as_str) {
        errs.extend(
            is_qualified_name(f)
                .into_iter()
                .map(|m| invalid(path, f, &m)),
        );
        if !f.contains('/') && !is_standard_finalizer(f) {
            errs.push(invalid(
                path,
                f,
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
        if !seen.insert(f) {
            errs.push(duplicate(path, f));
        }
    }
    errs
}

fn is_standard_finalizer(f: &str) -> bool {
    matches!(f, "kubernetes" | "orphan" | "foregroundDeletion")
}

/// `ValidateObjectMeta` for a create. Namespace presence is the server's concern; its syntax is
/// checked here when set on a namespaced kind.
pub(crate) fn validate_object_meta(obj: &Value, rule: NameRule, namespaced: bool) -> Errs {
    let empty = Value::Null;
    let meta = obj.get("metadata").unwrap_or(&empty);
    let path = Path::new("metadata");
    let mut errs = Errs::new();
    let gen = st(meta, "generateName");
    if !gen.is_empty() {
        errs.extend(
            rule.check(gen, true)
                .into_iter()
                .map(|m| invalid(&path.child("generateName"), gen, &m)),
        );
    }
    let name = st(meta, "name");
    if name.is_empty() {
        errs.push(required_d(
            &path.child("name"),
            "name or generateName is required",
        ));
    } else {
        errs.extend(
            rule.check(name, false)
                .into_iter()
                .map(|m| invalid(&path.child("name"), name, &m)),
        );
    }
    let ns = st(meta, "namespace");
    if namespaced && !ns.is_empty() {
        errs.extend(
            is_dns1123_label(ns)
                .into_iter()
                .map(|m| invalid(&path.child("namespace"), ns, &m)),
        );
    }
    errs.extend(validate_nonnegative(meta, "generation", &path));
    errs.extend(validate_labels(
        &str_map(meta, "labels"),
        &path.child("labels"),
    ));
    errs.extend(validate_annotations(
        &str_map(meta, "annotations"),
        &path.child("annotations"),
    ));
    errs.extend(validate_owner_references(
        meta,
        &path.child("ownerReferences"),
    ));
    errs.extend(validate_finalizers(meta, &path.child("finalizers")));
    errs
}

/// `ValidateObjectMetaUpdate`. System fields the server fills before validating (resourceVersion,
/// generation) are not re-checked; uid and creationTimestamp are compared only when sent.
pub(crate) fn validate_object_meta_update(obj: &Value, old: &Value) -> Errs {
    let empty = Value::Null;
    let meta = obj.get("metadata").unwrap_or(&empty);
    let old_meta = old.get("metadata").unwrap_or(&empty);
    let path = Path::new("metadata");
    let mut errs = Errs::new();
    if get(old_meta, "deletionTimestamp").is_some() {
        let old_f: Vec<&str> = arr(old_meta, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let new_f: Vec<&str> = arr(meta, "finalizers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let extra: Vec<&str> = new_f
            .iter()
            .copied()
            .filter(|f| !old_f.contains(f))
            .collect();
        if !extra.is_empty() {
            errs.push(forbidden(
                &path.child("finalizers"),
                &format!("no new finalizers can be added if the object is being deleted, found new finalizers {}", go_string_slice(&extra)),
            ));
        }
    }
    for key in ["name", "namespace"] {
        if st(meta, key) != st(old_meta, key) {
            errs.push(invalid(&path.child(key), st(meta, key), IMMUTABLE));
        }
    }
    for key in ["uid", "creationTimestamp"] {
        if !unset_str(meta, key) && st(meta, key) != st(old_meta, key) {
            errs.push(invalid(&path.child(key), st(meta, key), IMMUTABLE));
        }
    }
    errs.extend(validate_labels(
        &str_map(meta, "labels"),
        &path.child("labels"),
    ));
    errs.extend(validate_annotations(
        &str_map(meta, "annotations"),
        &path.child("annotations"),
    ));
    errs.extend(validate_owner_references(
        meta,
        &path.child("ownerReferences"),
    ));
    errs.extend(validate_finalizers(meta, &path.child("finalizers")));
    errs
}

/// `ValidateLabelSelector` (strict: label values in selectors must be valid).
pub(crate) fn validate_label_selector(sel: &Value, path: &Path) -> Errs {
    let mut errs = validate_labels(&str_map(sel, "matchLabels"), &path.child("matchLabels"));
    for (i, e) in arr(sel, "matchExpressions").iter().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let values = arr(e, "values");
        let op = st(e, "operator");
        match op {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(required_d(
                        &p.child("values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(forbidden(
                        &p.child("values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            _ => errs.push(invalid(
                &p.child("operator"),
                op,
                "not a valid selector operator",
            )),
        }
        let key = st(e, "key");
        errs.extend(
            is_qualified_name(key)
                .into_iter()
                .map(|m| invalid(&p.child("key"), key, &m)),
        );
        for (j, v) in values.iter().enumerate() {
            let v = v.as_str().unwrap_or("");
            errs.extend(
                is_valid_label_value(v)
                    .into_iter()
                    .map(|m| invalid(&p.child("values").index(j), v, &m)),
            );
        }
    }
    errs
}

/// The gogo-protobuf `String()` of a `*metav1.LabelSelector`, which upstream prints for selector
/// values in field errors.
pub(crate) fn label_selector_string(sel: Option<&Value>) -> String {
    let Some(sel) = sel.filter(|s| !s.is_null()) else {
        return "nil".to_string();
    };
    let labels: String = str_map(sel, "matchLabels")
        .iter()
        .map(|(k, v)| format!("{k}: {v},"))
        .collect();
    let exprs: String = arr(sel, "matchExpressions")
        .iter()
        .map(|e| {
            let vals: Vec<&str> = arr(e, "values").iter().filter_map(Value::as_str).collect();
            format!(
                "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
                st(e, "key"),
                st(e, "operator"),
                vals.join(" ")
            )
        })
        .collect();
    format!("&LabelSelector{{MatchLabels:map[string]string{{{labels}}},MatchExpressions:[]LabelSelectorRequirement{{{exprs}}},}}")
}

/// Go's `%#v` of an object's `labels` map (`map[string]string(nil)` when absent).
pub(crate) fn labels_go_string(meta: Option<&Value>) -> String {
    match meta.and_then(|m| obj(m, "labels")) {
        None => "map[string]string(nil)".to_string(),
        Some(_) => go_string_map(&str_map(meta.unwrap_or(&Value::Null), "labels")),
    }
}

/// Whether `selector` (a JSON `metav1.LabelSelector`) matches `labels`; None when unparsable.
pub(crate) fn selector_matches(selector: &Value, meta: Option<&Value>) -> Option<bool> {
    let sel = apimachinery::selectors::LabelSelector::from_json(selector).ok()?;
    if sel.is_empty() && !sel.is_nothing() {
        return Some(true);
    }
    Some(sel.matches(meta.and_then(|m| obj(m, "labels"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(errs: &Errs) -> Vec<String> {
        errs.iter().map(|e| e.message()).collect()
    }

    #[test]
    fn name_rules() {
        let cases = [
            (NameRule::Subdomain, "Web_1", "metadata.name: Invalid value: \"Web_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
            (NameRule::Label, "a.b", "metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
            (NameRule::Dns1035, "1web", "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"),
            (NameRule::PathSegment, "a/b", "metadata.name: Invalid value: \"a/b\": may not contain '/'"),
        ];
        for (rule, name, want) in cases {
            let errs = validate_object_meta(&json!({"metadata": {"name": name}}), rule, true);
            assert_eq!(msgs(&errs), vec![want.to_string()], "{name}");
        }
    }

    #[test]
    fn name_or_generate_name_required() {
        let errs = validate_object_meta(&json!({"metadata": {}}), NameRule::Subdomain, true);
        assert_eq!(
            msgs(&errs),
            vec!["metadata.name: Required value: name or generateName is required"]
        );
        let errs = validate_object_meta(
            &json!({"metadata": {"generateName": "web-"}}),
            NameRule::Subdomain,
            true,
        );
        assert_eq!(
            errs.len(),
            1,
            "generateName with trailing dash is fine, name still required"
        );
    }

    #[test]
    fn labels_and_annotations() {
        let errs = validate_object_meta(
            &json!({"metadata": {"name": "a", "labels": {"app": "bad value"}, "annotations": {"x/y/z": "v"}}}),
            NameRule::Subdomain,
            true,
        );
        let m = msgs(&errs);
        assert_eq!(m.len(), 2);
        assert!(m[0].starts_with(
            "metadata.labels: Invalid value: \"bad value\": a valid label must be an empty string"
        ));
        assert!(m[1].starts_with(
            "metadata.annotations: Invalid value: \"x/y/z\": a qualified name must consist"
        ));
        let big = "x".repeat(TOTAL_ANNOTATION_SIZE_LIMIT);
        let errs = validate_object_meta(
            &json!({"metadata": {"name": "a", "annotations": {"k": big}}}),
            NameRule::Subdomain,
            true,
        );
        assert_eq!(
            msgs(&errs),
            vec!["metadata.annotations: Too long: may not be more than 262144 bytes"]
        );
    }

    #[test]
    fn update_name_is_immutable() {
        let errs = validate_object_meta_update(
            &json!({"metadata": {"name": "b"}}),
            &json!({"metadata": {"name": "a"}}),
        );
        assert_eq!(
            msgs(&errs),
            vec!["metadata.name: Invalid value: \"b\": field is immutable"]
        );
    }
}
