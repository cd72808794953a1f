//! Create-only review resources answered on the spot and never stored: who am I
//! (SelfSubjectReview), may I (Self/Local/SubjectAccessReview, SelfSubjectRulesReview) and
//! token checks (TokenReview). Authorization answers come from the same seam the request
//! path uses, so they stay truthful when RBAC arrives.

use crate::auth::{Attributes, Authenticator, Authorizer};
use crate::request::Target;
use crate::resources::Resource;
use component_base::tls::UserInfo;
use serde_json::{json, Value};

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// The answered review object (status filled in).
pub fn answer(
    r: &Resource,
    t: &Target,
    mut obj: Value,
    user: &UserInfo,
    authn: &Authenticator,
    authz: &dyn Authorizer,
) -> Value {
    obj["apiVersion"] = json!(t.api_version());
    obj["kind"] = json!(r.kind);
    if obj.get("metadata").is_none_or(|m| !m.is_object()) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["creationTimestamp"] = Value::Null;
    let user_json = |u: &UserInfo| json!({"username": u.name, "uid": u.uid, "groups": u.groups});
    match r.kind {
        "SelfSubjectReview" => obj["status"] = json!({"userInfo": user_json(user)}),
        "TokenReview" => {
            let token = str_at(&obj, "/spec/token").to_string();
            obj["status"] = match authn.authenticate(None, Some(&format!("Bearer {token}"))) {
                Some(u) => {
                    json!({"authenticated": true, "user": user_json(&u), "audiences": obj.pointer("/spec/audiences").cloned().unwrap_or(json!([]))})
                }
                None => {
                    json!({"authenticated": false, "user": {}, "error": "invalid bearer token"})
                }
            };
        }
        "SelfSubjectRulesReview" => {
            obj["status"] = json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            });
        }
        _ => {
            // Self/Local/SubjectAccessReview.
            let subject = if r.kind == "SelfSubjectAccessReview" {
                user.clone()
            } else {
                UserInfo {
                    name: str_at(&obj, "/spec/user").to_string(),
                    uid: str_at(&obj, "/spec/uid").to_string(),
                    groups: obj
                        .pointer("/spec/groups")
                        .and_then(Value::as_array)
                        .map(|g| {
                            g.iter()
                                .filter_map(Value::as_str)
                                .map(String::from)
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            };
            let ra = obj
                .pointer("/spec/resourceAttributes")
                .cloned()
                .unwrap_or(json!({}));
            let ns = if r.kind == "LocalSubjectAccessReview" {
                t.namespace.clone().unwrap_or_default()
            } else {
                str_at(&ra, "/namespace").to_string()
            };
            let attrs = Attributes {
                user: &subject,
                verb: str_at(&ra, "/verb"),
                namespace: (!ns.is_empty()).then_some(ns.as_str()),
                group: str_at(&ra, "/group"),
                resource: str_at(&ra, "/resource"),
                subresource: ra.get("subresource").and_then(Value::as_str),
                name: ra.get("name").and_then(Value::as_str),
            };
            obj["status"] = match authz.authorize(&attrs) {
                Ok(()) => json!({"allowed": true}),
                Err(why) => json!({"allowed": false, "reason": why}),
            };
        }
    }
    obj
}
