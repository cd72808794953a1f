//! `batch/v1`: Job and CronJob — upstream's `pkg/apis/batch/v1/defaults.go` and
//! `pkg/apis/batch/validation`, including robfig/cron's standard schedule parser messages.
//!
//! Selector generation for Jobs (the `controller-uid` selector and template labels) is the
//! server strategy's job and must happen before `validate`, as upstream's `PrepareForCreate`.

use crate::core::pod::{default_pod_template, validate_pod_template};
use crate::meta::{
    label_selector_string, labels_go_string, selector_matches, validate_label_selector,
};
use crate::util::*;
use apimachinery::errors::Path;
use serde_json::{json, Value};

pub(crate) fn default(kind: &str, obj: &mut Value) {
    match kind {
        "Job" => default_job(obj),
        "CronJob" => {
            let Some(spec) = ensure_obj(obj, "spec") else {
                return;
            };
            default_str(spec, "concurrencyPolicy", "Allow");
            default_field(spec, "suspend", json!(false));
            default_field(spec, "successfulJobsHistoryLimit", json!(3));
            default_field(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(t) = ensure_obj(spec, "jobTemplate")
                .and_then(|jt| ensure_obj(jt, "spec"))
                .and_then(|s| ensure_obj(s, "template"))
            {
                default_pod_template(t);
            }
        }
        _ => {}
    }
}

fn default_job(obj: &mut Value) {
    let template_labels = obj
        .pointer("/spec/template/metadata/labels")
        .filter(|l| l.is_object())
        .cloned();
    let Some(spec) = ensure_obj(obj, "spec") else {
        return;
    };
    if get(spec, "completions").is_none() && get(spec, "parallelism").is_none() {
        spec["completions"] = json!(1);
        spec["parallelism"] = json!(1);
    }
    default_field(spec, "parallelism", json!(1));
    let backoff = if get(spec, "backoffLimitPerIndex").is_some() {
        i64::from(i32::MAX)
    } else {
        6
    };
    default_field(spec, "backoffLimit", json!(backoff));
    default_field(spec, "completionMode", json!("NonIndexed"));
    default_field(spec, "suspend", json!(false));
    let has_pfp = get(spec, "podFailurePolicy").is_some();
    if let Some(pfp) = child_mut(spec, "podFailurePolicy") {
        for rule in items_mut(pfp, "rules") {
            for cond in items_mut(rule, "onPodConditions") {
                default_str(cond, "status", "True");
            }
        }
    }
    default_field(
        spec,
        "podReplacementPolicy",
        json!(if has_pfp {
            "Failed"
        } else {
            "TerminatingOrFailed"
        }),
    );
    if let Some(t) = ensure_obj(spec, "template") {
        default_pod_template(t);
    }
    if let Some(labels) = template_labels {
        if let Some(meta) = ensure_obj(obj, "metadata") {
            if obj_len(meta, "labels") == 0 {
                meta["labels"] = labels;
            }
        }
    }
}

fn obj_len(v: &Value, key: &str) -> usize {
    obj(v, key).map_or(0, |m| m.len())
}

const MAX_PARALLELISM_FOR_INDEXED_JOB: i64 = 100_000;

/// `validateJobSpec` (shared by Jobs and CronJob job templates).
fn validate_job_spec_common(spec: &Value, path: &Path) -> Errs {
    let mut errs = Errs::new();
    for key in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
    ] {
        errs.extend(validate_nonnegative(spec, key, path));
    }
    if let Some(mode) = get(spec, "completionMode").and_then(Value::as_str) {
        if !matches!(mode, "NonIndexed" | "Indexed") {
            errs.push(not_supported(
                &path.child("completionMode"),
                mode,
                &["NonIndexed", "Indexed"],
            ));
        }
        if mode == "Indexed" {
            if get(spec, "completions").is_none() {
                errs.push(required_d(
                    &path.child("completions"),
                    "when completion mode is Indexed",
                ));
            }
            if let Some(p) = int(spec, "parallelism") {
                if p > MAX_PARALLELISM_FOR_INDEXED_JOB {
                    errs.push(invalid(
                        &path.child("parallelism"),
                        p,
                        &format!("must be less than or equal to {MAX_PARALLELISM_FOR_INDEXED_JOB} when completion mode is Indexed"),
                    ));
                }
            }
        }
    }
    if get(spec, "backoffLimitPerIndex").is_some() && st(spec, "completionMode") != "Indexed" {
        errs.push(required_d(
            &path.child("completionMode"),
            "when backoffLimitPerIndex is specified, completionMode must be Indexed",
        ));
    }
    if let Some(prp) = get(spec, "podReplacementPolicy").and_then(Value::as_str) {
        let has_pfp = get(spec, "podFailurePolicy").is_some();
        if has_pfp && prp != "Failed" {
            errs.push(not_supported(
                &path.child("podReplacementPolicy"),
                prp,
                &["Failed"],
            ));
        } else if !matches!(prp, "TerminatingOrFailed" | "Failed") {
            errs.push(not_supported(
                &path.child("podReplacementPolicy"),
                prp,
                &["Failed", "TerminatingOrFailed"],
            ));
        }
    }
    let empty = json!({});
    let template = spec.get("template").unwrap_or(&empty);
    let tp = path.child("template");
    errs.extend(validate_pod_template(template, &tp));
    let rp = st(template.get("spec").unwrap_or(&empty), "restartPolicy");
    if !matches!(rp, "OnFailure" | "Never") {
        errs.push(not_supported(
            &tp.child("spec").child("restartPolicy"),
            rp,
            &["OnFailure", "Never"],
        ));
    } else if rp == "OnFailure" && get(spec, "podFailurePolicy").is_some() {
        errs.push(invalid(
            &tp.child("spec").child("restartPolicy"),
            rp,
            "only \"Never\" is supported when podFailurePolicy is specified",
        ));
    }
    errs
}

/// `ValidateJobSpec`: the common checks plus the (generated or manual) selector.
fn validate_job_spec(spec: &Value, path: &Path) -> Errs {
    let mut errs = validate_job_spec_common(spec, path);
    match get(spec, "selector") {
        None => errs.push(required(&path.child("selector"))),
        Some(sel) => errs.extend(validate_label_selector(sel, &path.child("selector"))),
    }
    let sel = spec.get("selector").cloned().unwrap_or(Value::Null);
    let tmeta = spec
        .get("template")
        .and_then(|t| t.get("metadata"))
        .filter(|m| m.is_object());
    if selector_matches(&sel, tmeta) == Some(false) {
        errs.push(invalid_raw(
            &path.child("template").child("metadata").child("labels"),
            &labels_go_string(tmeta),
            "`selector` does not match template `labels`",
        ));
    }
    errs
}

fn spec_of(obj: &Value) -> Value {
    obj.get("spec")
        .filter(|s| s.is_object())
        .cloned()
        .unwrap_or_else(|| json!({}))
}

pub(crate) fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Errs {
    let spec = spec_of(obj);
    let path = Path::new("spec");
    match kind {
        "Job" => {
            let mut errs = validate_job_spec(&spec, &path);
            if old.is_none() && st(&spec, "completionMode") == "Indexed" {
                if let Some(c) = int(&spec, "completions").filter(|c| *c > 0) {
                    let name = obj.get("metadata").map(|m| st(m, "name")).unwrap_or("");
                    let host = format!("{name}-{}", c - 1);
                    if !is_dns1123_label(&host).is_empty() {
                        errs.push(invalid(
                            &Path::new("metadata").child("name"),
                            name,
                            &format!("will not able to create pod with invalid DNS label: {host}"),
                        ));
                    }
                }
            }
            if let Some(old) = old {
                let old_spec = spec_of(old);
                if get(&spec, "completions") != get(&old_spec, "completions") {
                    let v = spec.get("completions").cloned().unwrap_or(Value::Null);
                    errs.push(invalid(&path.child("completions"), v, IMMUTABLE));
                }
                if get(&spec, "selector") != get(&old_spec, "selector") {
                    errs.push(invalid_raw(
                        &path.child("selector"),
                        &label_selector_string(get(&spec, "selector")),
                        IMMUTABLE,
                    ));
                }
                if !template_update_allowed(&spec, &old_spec) {
                    errs.push(invalid_raw(
                        &path.child("template"),
                        "core.PodTemplateSpec{...}",
                        IMMUTABLE,
                    ));
                }
                for key in [
                    "completionMode",
                    "podFailurePolicy",
                    "backoffLimitPerIndex",
                    "managedBy",
                    "successPolicy",
                ] {
                    if get(&spec, key) != get(&old_spec, key) {
                        match spec.get(key).cloned() {
                            Some(Value::String(s)) => {
                                errs.push(invalid(&path.child(key), s, IMMUTABLE))
                            }
                            Some(Value::Number(n)) => {
                                errs.push(invalid(&path.child(key), n, IMMUTABLE))
                            }
                            other => errs.push(invalid_raw(
                                &path.child(key),
                                &other.map_or("nil".to_string(), |v| v.to_string()),
                                IMMUTABLE,
                            )),
                        }
                    }
                }
            }
            errs
        }
        "CronJob" => {
            let mut errs = validate_cronjob_spec(&spec, old.map(spec_of).as_ref(), &path);
            if old.is_none() {
                let name = obj.get("metadata").map(|m| st(m, "name")).unwrap_or("");
                if name.len() > 52 {
                    errs.push(invalid(
                        &Path::new("metadata").child("name"),
                        name,
                        "must be no more than 52 characters",
                    ));
                }
            }
            errs
        }
        _ => Vec::new(),
    }
}

/// The template of a Job is immutable, except scheduling directives while it is suspended and
/// has never started (upstream's `AllowMutableSchedulingDirectives`).
fn template_update_allowed(new: &Value, old: &Value) -> bool {
    let (nt, ot) = (new.get("template"), old.get("template"));
    if nt == ot {
        return true;
    }
    if !boolean(new, "suspend") || !boolean(old, "suspend") {
        return false;
    }
    let strip = |t: Option<&Value>| {
        let mut t = t.cloned().unwrap_or(Value::Null);
        if let Some(s) = t.get_mut("spec").and_then(Value::as_object_mut) {
            for key in ["nodeSelector", "tolerations", "affinity", "schedulingGates"] {
                s.remove(key);
            }
        }
        if let Some(m) = t.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("labels");
            m.remove("annotations");
        }
        t
    };
    strip(nt) == strip(ot)
}

fn validate_cronjob_spec(spec: &Value, old: Option<&Value>, path: &Path) -> Errs {
    let mut errs = Errs::new();
    let schedule = st(spec, "schedule");
    let sp = path.child("schedule");
    if schedule.is_empty() {
        errs.push(required(&sp));
    } else {
        let allow_tz = old.is_some_and(|o| st(o, "schedule").contains("TZ"));
        if let Err(e) = parse_cron_standard(schedule) {
            errs.push(invalid(&sp, schedule, &e));
        }
        if allow_tz && schedule.contains("TZ") && get(spec, "timeZone").is_some() {
            errs.push(invalid(
                &sp,
                schedule,
                "cannot use both timeZone field and TZ or CRON_TZ in schedule",
            ));
        } else if !allow_tz && schedule.contains("TZ") {
            errs.push(invalid(
                &sp,
                schedule,
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
    }
    errs.extend(validate_nonnegative(spec, "startingDeadlineSeconds", path));
    if old.is_none_or(|o| o.get("timeZone") != spec.get("timeZone")) {
        if let Some(tz) = get(spec, "timeZone").and_then(Value::as_str) {
            errs.extend(validate_time_zone(tz, &path.child("timeZone")));
        }
    }
    let cp = st(spec, "concurrencyPolicy");
    match cp {
        "Allow" | "Forbid" | "Replace" => {}
        "" => errs.push(required(&path.child("concurrencyPolicy"))),
        _ => errs.push(not_supported(
            &path.child("concurrencyPolicy"),
            cp,
            &["Allow", "Forbid", "Replace"],
        )),
    }
    let empty = json!({});
    let jt = spec.get("jobTemplate").unwrap_or(&empty);
    let jtp = path.child("jobTemplate");
    let jspec = jt.get("spec").unwrap_or(&empty);
    errs.extend(validate_job_spec_common(jspec, &jtp.child("spec")));
    if let Some(sel) = get(jspec, "selector") {
        errs.push(invalid_raw(
            &jtp.child("spec").child("selector"),
            &label_selector_string(Some(sel)),
            "`selector` will be auto-generated",
        ));
    }
    if boolean(jspec, "manualSelector") {
        errs.push(not_supported(
            &jtp.child("spec").child("manualSelector"),
            true,
            &["nil", "false"],
        ));
    }
    errs.extend(validate_nonnegative(
        spec,
        "successfulJobsHistoryLimit",
        path,
    ));
    errs.extend(validate_nonnegative(spec, "failedJobsHistoryLimit", path));
    errs
}

fn validate_time_zone(tz: &str, path: &Path) -> Errs {
    if tz.is_empty() {
        return vec![invalid(
            path,
            tz,
            "timeZone must be nil or non-empty string",
        )];
    }
    for part in tz.split('/') {
        let valid_chars = !part.is_empty()
            && part
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-_+".contains(&c));
        if part == "." || part == ".." || part.starts_with('-') || !valid_chars {
            return vec![invalid(path, tz, &format!("unknown time zone {tz}"))];
        }
    }
    if tz.eq_ignore_ascii_case("Local") {
        return vec![invalid(
            path,
            tz,
            "timeZone must be an explicit time zone as defined in https://www.iana.org/time-zones",
        )];
    }
    Vec::new()
}

// ---------------------------------------------------------------------------------------------
// robfig/cron/v3 `ParseStandard`, for its error messages.

struct Bounds {
    min: i64,
    max: i64,
    names: &'static [&'static str],
    name_base: i64,
}

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const FIELD_BOUNDS: [Bounds; 5] = [
    Bounds {
        min: 0,
        max: 59,
        names: &[],
        name_base: 0,
    },
    Bounds {
        min: 0,
        max: 23,
        names: &[],
        name_base: 0,
    },
    Bounds {
        min: 1,
        max: 31,
        names: &[],
        name_base: 0,
    },
    Bounds {
        min: 1,
        max: 12,
        names: MONTHS,
        name_base: 1,
    },
    Bounds {
        min: 0,
        max: 6,
        names: DAYS,
        name_base: 0,
    },
];

fn must_parse_int(expr: &str) -> Result<i64, String> {
    let n: i64 = expr.parse().map_err(|e: std::num::ParseIntError| {
        let why = match e.kind() {
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
                "value out of range"
            }
            _ => "invalid syntax",
        };
        format!("failed to parse int from {expr}: strconv.Atoi: parsing {expr:?}: {why}")
    })?;
    if n < 0 {
        return Err(format!("negative number ({n}) not allowed: {expr}"));
    }
    Ok(n)
}

fn parse_int_or_name(expr: &str, b: &Bounds) -> Result<i64, String> {
    let lower = expr.to_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        return Ok(i as i64 + b.name_base);
    }
    must_parse_int(expr)
}

fn get_range(expr: &str, b: &Bounds) -> Result<(), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_high.len() == 1;
    let (start, mut end);
    if low_high[0] == "*" || low_high[0] == "?" {
        start = b.min;
        end = b.max;
    } else {
        start = parse_int_or_name(low_high[0], b)?;
        end = match low_high.len() {
            1 => start,
            2 => parse_int_or_name(low_high[1], b)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
    }
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let s = must_parse_int(range_and_step[1])?;
            if single {
                end = b.max;
            }
            s
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

/// Ok when robfig/cron's standard parser accepts `spec`, else its error text.
pub(crate) fn parse_cron_standard(spec: &str) -> Result<(), String> {
    if spec.is_empty() {
        return Err("empty spec string".to_string());
    }
    let mut spec = spec;
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let i = spec.find(' ').unwrap_or(spec.len());
        spec = spec[i..].trim();
    }
    if let Some(d) = spec.strip_prefix('@') {
        return match d {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            _ if d.starts_with("every ") => {
                let dur = &d["every ".len()..];
                if parse_go_duration(dur) {
                    Ok(())
                } else {
                    Err(format!(
                        "failed to parse duration @{d}: time: invalid duration {dur:?}"
                    ))
                }
            }
            _ => Err(format!("unrecognized descriptor: {spec}")),
        };
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    for (field, b) in fields.iter().zip(FIELD_BOUNDS.iter()) {
        for r in field.split(',').filter(|r| !r.is_empty()) {
            get_range(r, b)?;
        }
    }
    Ok(())
}

/// Whether `s` is a Go `time.ParseDuration` string such as `1h30m` or `90s`.
fn parse_go_duration(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    let mut rest = s;
    let mut any = false;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n == 0 {
            return false;
        }
        rest = &rest[n..];
        let unit = ["ns", "us", "µs", "μs", "ms", "s", "m", "h"]
            .iter()
            .find(|u| rest.starts_with(*u));
        match unit {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
        any = true;
    }
    any
}

/// Job/CronJob status checks: counters non-negative.
pub(crate) fn validate_status(kind: &str, obj: &Value) -> Errs {
    let empty = json!({});
    let status = obj.get("status").unwrap_or(&empty);
    let path = Path::new("status");
    let mut errs = Errs::new();
    if kind == "Job" {
        for key in ["active", "succeeded", "failed", "ready", "terminating"] {
            errs.extend(validate_nonnegative(status, key, &path));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(errs: &Errs) -> Vec<String> {
        errs.iter().map(|e| e.message()).collect()
    }

    fn job(spec: Value) -> Value {
        let mut o = json!({"metadata": {"name": "pi"}, "spec": spec});
        default("Job", &mut o);
        o
    }

    fn tmpl(rp: &str) -> Value {
        json!({"metadata": {"labels": {"job": "pi"}}, "spec": {"restartPolicy": rp, "containers": [{"name": "c", "image": "perl"}]}})
    }

    #[test]
    fn job_defaults() {
        let j = job(json!({"selector": {"matchLabels": {"job": "pi"}}, "template": tmpl("Never")}));
        let s = &j["spec"];
        assert_eq!(s["parallelism"], 1);
        assert_eq!(s["completions"], 1);
        assert_eq!(s["backoffLimit"], 6);
        assert_eq!(s["completionMode"], "NonIndexed");
        assert_eq!(s["suspend"], false);
        assert_eq!(s["podReplacementPolicy"], "TerminatingOrFailed");
        assert_eq!(j["metadata"]["labels"], json!({"job": "pi"}));
        assert!(
            validate("Job", &j, None).is_empty(),
            "{:?}",
            msgs(&validate("Job", &j, None))
        );

        let j = job(json!({"parallelism": 3, "template": tmpl("Never")}));
        assert_eq!(j["spec"].get("completions"), None);
    }

    #[test]
    fn job_errors() {
        let cases: Vec<(Value, Vec<&str>)> = vec![
            (json!({"selector": {"matchLabels": {"job": "pi"}}, "template": {"metadata": {"labels": {"job": "pi"}}, "spec": {"containers": [{"name": "c", "image": "perl"}]}}}),
             vec!["spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]),
            (json!({"template": tmpl("Never")}), vec![
                "spec.selector: Required value",
                "spec.template.metadata.labels: Invalid value: map[string]string{\"job\":\"pi\"}: `selector` does not match template `labels`",
            ]),
            (json!({"backoffLimit": -1, "selector": {"matchLabels": {"job": "pi"}}, "template": tmpl("Never")}),
             vec!["spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0"]),
            (json!({"selector": {"matchLabels": {"job": "x"}}, "template": tmpl("OnFailure")}),
             vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"job\":\"pi\"}: `selector` does not match template `labels`"]),
        ];
        for (spec, want) in cases {
            assert_eq!(
                msgs(&validate("Job", &job(spec.clone()), None)),
                want,
                "{spec}"
            );
        }
    }

    #[test]
    fn job_template_is_immutable() {
        let old =
            job(json!({"selector": {"matchLabels": {"job": "pi"}}, "template": tmpl("Never")}));
        let mut new = old.clone();
        new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("perl:2");
        assert_eq!(
            msgs(&validate("Job", &new, Some(&old))),
            vec!["spec.template: Invalid value: core.PodTemplateSpec{...}: field is immutable"]
        );
        let mut new = old.clone();
        new["spec"]["selector"] = json!({"matchLabels": {"job": "pi", "x": "y"}});
        new["spec"]["template"]["metadata"]["labels"]["x"] = json!("y");
        let m = msgs(&validate("Job", &new, Some(&old)));
        assert!(m.contains(&"spec.selector: Invalid value: &LabelSelector{MatchLabels:map[string]string{job: pi,x: y,},MatchExpressions:[]LabelSelectorRequirement{},}: field is immutable".to_string()), "{m:?}");
    }

    #[test]
    fn cronjob_defaults_and_errors() {
        let mut cj = json!({"metadata": {"name": "c"}, "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox"}]}}}}}});
        default("CronJob", &mut cj);
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(cj["spec"]["suspend"], false);
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
        assert_eq!(cj["spec"]["jobTemplate"]["spec"].get("backoffLimit"), None);
        assert_eq!(
            cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["dnsPolicy"],
            "ClusterFirst"
        );
        assert!(
            validate("CronJob", &cj, None).is_empty(),
            "{:?}",
            msgs(&validate("CronJob", &cj, None))
        );

        cj["spec"]["schedule"] = json!("61 * * * *");
        assert_eq!(
            msgs(&validate("CronJob", &cj, None)),
            vec!["spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61"]
        );
        cj["spec"]["schedule"] = json!("TZ=UTC 0 * * * *");
        assert_eq!(
            msgs(&validate("CronJob", &cj, None)),
            vec!["spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"]
        );
    }

    #[test]
    fn cron_parser_messages() {
        let cases = [
            ("@hourly", Ok(())),
            ("@every 5m", Ok(())),
            ("0 0 * * MON-FRI", Ok(())),
            ("0 0 1 jan,jul *", Ok(())),
            ("@often", Err("unrecognized descriptor: @often")),
            (
                "* * * *",
                Err("expected exactly 5 fields, found 4: [* * * *]"),
            ),
            (
                "x * * * *",
                Err("failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax"),
            ),
            (
                "5-1 * * * *",
                Err("beginning of range (5) beyond end of range (1): 5-1"),
            ),
            (
                "* * 0 * *",
                Err("beginning of range (0) below minimum (1): 0"),
            ),
            (
                "*/0 * * * *",
                Err("step of range should be a positive number: */0"),
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(
                parse_cron_standard(spec),
                want.map_err(str::to_string),
                "{spec}"
            );
        }
    }
}
