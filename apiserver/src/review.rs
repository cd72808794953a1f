//! Create-only review resources answered on the spot and never stored: who am I
//! (SelfSubjectReview), may I (Self/Local/SubjectAccessReview, SelfSubjectRulesReview) and
//! token checks (TokenReview, which accepts every token the request path does, service-account
//! tokens included). Authorization answers come from the same seam the request path uses, so
//! they stay truthful when RBAC arrives.

use crate::auth::{Attributes, Authenticator, Authorizer, TokenAuth, User};
use crate::request::Target;
use crate::resources::Resource;
use component_base::tls::UserInfo;
use serde_json::{json, Value};

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// The answered review object (status filled in).
pub async fn answer(
    r: &Resource,
    t: &Target,
    mut obj: Value,
    user: &User,
    authn: &Authenticator,
    authz: &dyn Authorizer,
) -> Value {
    obj["apiVersion"] = json!(t.api_version());
    obj["kind"] = json!(r.kind);
    if obj.get("metadata").is_none_or(|m| !m.is_object()) {
        obj["metadata"] = json!({});
    }
    obj["metadata"]["creationTimestamp"] = Value::Null;
    let user_json = |u: &User| {
        let mut v = json!({"username": u.info.name, "uid": u.info.uid, "groups": u.info.groups});
        if !u.extra.is_empty() {
            v["extra"] = json!(u.extra);
        }
        v
    };
    match r.kind {
        "SelfSubjectReview" => obj["status"] = json!({"userInfo": user_json(user)}),
        "TokenReview" => {
            let token = str_at(&obj, "/spec/token").to_string();
            let audiences: Vec<String> = obj
                .pointer("/spec/audiences")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            obj["status"] = match authn.authenticate_token(&token, &audiences).await {
                TokenAuth::Ok {
                    mut user,
                    audiences,
                } => {
                    // As on the request path (upstream's AuthenticatedGroupAdder).
                    if !user.info.groups.iter().any(|g| g == "system:authenticated") {
                        user.info.groups.push("system:authenticated".into());
                    }
                    json!({"authenticated": true, "user": user_json(&user), "audiences": audiences})
                }
                TokenAuth::Unknown => {
                    json!({"authenticated": false, "user": {}, "error": "invalid bearer token"})
                }
                TokenAuth::Rejected(why) => {
                    json!({"authenticated": false, "user": {}, "error": why})
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
                user.info.clone()
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
