//! Authentication: client certificates signed by the cluster CA (CN = user, O = groups), bearer
//! tokens from a token file, and service-account tokens (ES256 JWTs from
//! [`crate::serviceaccount`]). Anonymous requests are refused except for the public paths
//! (health, version, service-account issuer discovery). Authorization is a separate seam
//! ([`Authorizer`]); today every authenticated user is allowed, as the issue scopes RBAC to a
//! later change.

use crate::serviceaccount::{self, ObjectGetter, ServiceAccountTokens, TokenError};
use component_base::tls::UserInfo;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Paths anonymous clients may read: upstream's `system:public-info-viewer`, plus the issuer
/// discovery documents (upstream's `system:service-account-issuer-discovery`, which clusters
/// commonly bind to unauthenticated users so relying parties can fetch the keys).
pub fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz"
            | "/livez"
            | "/readyz"
            | "/version"
            | "/version/"
            | serviceaccount::OPENID_CONFIG_PATH
            | serviceaccount::JWKS_PATH
    ) || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

/// An authenticated identity: upstream's `user.Info` (the shared [`UserInfo`] plus `extra`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct User {
    pub info: UserInfo,
    /// Extra attributes (`authentication.kubernetes.io/pod-name`, ...).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl User {
    /// `system:anonymous` in `system:unauthenticated`.
    pub fn anonymous() -> Self {
        Self {
            info: UserInfo {
                name: "system:anonymous".into(),
                uid: String::new(),
                groups: vec!["system:unauthenticated".into()],
            },
            extra: BTreeMap::new(),
        }
    }
}

impl From<UserInfo> for User {
    fn from(info: UserInfo) -> Self {
        Self {
            info,
            extra: BTreeMap::new(),
        }
    }
}

/// The outcome of checking one bearer token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAuth {
    /// Authenticated, for these audiences.
    Ok { user: User, audiences: Vec<String> },
    /// No authenticator recognised the token.
    Unknown,
    /// A service-account token that was rejected, and why.
    Rejected(String),
}

struct ServiceAccountAuth {
    tokens: Arc<ServiceAccountTokens>,
    objects: Arc<dyn ObjectGetter>,
}

pub struct Authenticator {
    tokens: HashMap<String, UserInfo>,
    service_accounts: Option<ServiceAccountAuth>,
}

impl Authenticator {
    pub fn new(tokens: HashMap<String, UserInfo>) -> Self {
        Self {
            tokens,
            service_accounts: None,
        }
    }

    /// Also accept service-account tokens, checking their bound objects through `objects`.
    pub fn with_service_accounts(
        mut self,
        tokens: Arc<ServiceAccountTokens>,
        objects: Arc<dyn ObjectGetter>,
    ) -> Self {
        self.service_accounts = Some(ServiceAccountAuth { tokens, objects });
        self
    }

    /// The audiences the API server accepts for itself (`--api-audiences`).
    fn api_audiences(&self) -> &[String] {
        self.service_accounts
            .as_ref()
            .map_or(&[], |s| s.tokens.settings().api_audiences.as_slice())
    }

    /// Who sent this request: the verified client certificate wins, then a bearer token (the
    /// token file, then service-account tokens for the API audiences). Like upstream's
    /// `AuthenticatedGroupAdder`, every authenticated user is also in `system:authenticated`.
    pub async fn authenticate(
        &self,
        peer: Option<&UserInfo>,
        authorization: Option<&str>,
    ) -> Option<User> {
        let mut u = match peer {
            Some(p) => User::from(p.clone()),
            None => {
                let token = authorization?.strip_prefix("Bearer ")?.trim();
                match self.authenticate_token(token, self.api_audiences()).await {
                    TokenAuth::Ok { user, .. } => user,
                    TokenAuth::Unknown => return None,
                    TokenAuth::Rejected(why) => {
                        tracing::debug!(reason = %why, "rejected service account token");
                        return None;
                    }
                }
            }
        };
        if !u.info.groups.iter().any(|g| g == "system:authenticated") {
            u.info.groups.push("system:authenticated".into());
        }
        Some(u)
    }

    /// Check a bearer token for `audiences` (empty: the API audiences), as the request path and
    /// TokenReview do. Token-file users are audience-agnostic: like upstream's
    /// `WrapAudienceAgnosticToken`, they count only for audiences the API itself accepts.
    pub async fn authenticate_token(&self, token: &str, audiences: &[String]) -> TokenAuth {
        let api = self.api_audiences();
        let wanted: &[String] = if audiences.is_empty() { api } else { audiences };
        if let Some(u) = self.tokens.get(token) {
            if api.is_empty() {
                return TokenAuth::Ok {
                    user: u.clone().into(),
                    audiences: vec![],
                };
            }
            let shared: Vec<String> = api.iter().filter(|a| wanted.contains(a)).cloned().collect();
            if !shared.is_empty() {
                return TokenAuth::Ok {
                    user: u.clone().into(),
                    audiences: shared,
                };
            }
        }
        let Some(sa) = &self.service_accounts else {
            return TokenAuth::Unknown;
        };
        let now = serviceaccount::unix_now();
        let checked = match sa.tokens.verify(token, wanted, now) {
            Ok((claims, shared)) => {
                serviceaccount::check_objects(&claims, sa.objects.as_ref(), now)
                    .await
                    .map(|info| (info, shared))
            }
            Err(e) => Err(e),
        };
        match checked {
            Ok((info, audiences)) => TokenAuth::Ok {
                user: info.user(),
                audiences,
            },
            Err(TokenError::NotOurs) => TokenAuth::Unknown,
            Err(TokenError::Rejected(why)) => TokenAuth::Rejected(why),
        }
    }
}

/// The attributes an authorizer decides on.
#[derive(Debug)]
pub struct Attributes<'a> {
    pub user: &'a UserInfo,
    pub verb: &'a str,
    pub namespace: Option<&'a str>,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: Option<&'a str>,
    pub name: Option<&'a str>,
}

/// The authorization seam: RBAC plugs in here.
pub trait Authorizer: Send + Sync {
    /// `Ok(())` to allow, `Err(reason)` to deny.
    fn authorize(&self, attrs: &Attributes<'_>) -> Result<(), String>;
}

/// Allows every authenticated request.
pub struct AlwaysAllow;

impl Authorizer for AlwaysAllow {
    fn authorize(&self, _attrs: &Attributes<'_>) -> Result<(), String> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_and_certs() {
        let mut t = HashMap::new();
        t.insert(
            "s3cret".to_string(),
            UserInfo {
                name: "alice".into(),
                uid: "1".into(),
                groups: vec!["dev".into()],
            },
        );
        let a = Authenticator::new(t);
        let u = a.authenticate(None, Some("Bearer s3cret")).await.unwrap();
        assert_eq!(u.info.name, "alice");
        assert!(u.info.groups.contains(&"system:authenticated".to_string()));
        assert!(a.authenticate(None, Some("Bearer nope")).await.is_none());
        assert!(a.authenticate(None, None).await.is_none());
        let peer = UserInfo {
            name: "admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into()],
        };
        let admin = a
            .authenticate(Some(&peer), Some("Bearer nope"))
            .await
            .unwrap();
        assert_eq!(admin.info.name, "admin");
        assert_eq!(
            admin.info.groups,
            ["system:masters", "system:authenticated"]
        );
        assert!(is_public("/readyz") && is_public("/version") && !is_public("/api"));
        assert!(is_public("/openid/v1/jwks") && is_public("/.well-known/openid-configuration"));
    }

    #[tokio::test]
    async fn service_account_tokens_authenticate_requests_and_reviews() {
        use crate::serviceaccount::tests::{issuer, FakeObjects};
        use serde_json::json;
        let tokens = Arc::new(issuer());
        let objects = Arc::new(FakeObjects::with_default_account());
        objects.put("Pod", "default", "p", json!({"metadata": {"name": "p", "uid": "pod-uid"}, "spec": {"serviceAccountName": "default"}}));
        let a = Authenticator::new(HashMap::new())
            .with_service_accounts(tokens.clone(), objects.clone());
        let now = serviceaccount::unix_now();
        let tr = tokens
            .create_token(objects.as_ref(), "default", "default", json!({"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": "pod-uid"}}}), now)
            .await
            .unwrap();
        let bearer = format!("Bearer {}", tr["status"]["token"].as_str().unwrap());
        let u = a.authenticate(None, Some(&bearer)).await.unwrap();
        assert_eq!(u.info.name, "system:serviceaccount:default:default");
        assert_eq!(u.info.uid, "sa-uid");
        assert_eq!(
            u.info.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:default",
                "system:authenticated"
            ]
        );
        assert_eq!(u.extra["authentication.kubernetes.io/pod-name"], ["p"]);
        // A TokenReview for another audience is refused with upstream's reason.
        match a
            .authenticate_token(bearer.strip_prefix("Bearer ").unwrap(), &["vault".into()])
            .await
        {
            TokenAuth::Rejected(why) => assert!(why.starts_with("token audiences"), "{why}"),
            other => panic!("{other:?}"),
        }
        objects.remove("Pod", "default", "p");
        assert!(a.authenticate(None, Some(&bearer)).await.is_none());
        assert_eq!(
            a.authenticate_token("opaque", &[]).await,
            TokenAuth::Unknown
        );
    }
}
