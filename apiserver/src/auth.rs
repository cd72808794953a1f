//! Authentication: client certificates signed by the cluster CA (CN = user, O = groups) and
//! bearer tokens from a token file. Anonymous requests are refused except for the health and
//! version endpoints. Authorization is a separate seam ([`Authorizer`]); today every
//! authenticated user is allowed, as the issue scopes RBAC to a later change.

use component_base::tls::UserInfo;
use std::collections::HashMap;

/// Paths anonymous clients may read (upstream's `system:public-info-viewer`).
pub fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/livez" | "/readyz" | "/version" | "/version/"
    ) || path.starts_with("/healthz/")
        || path.starts_with("/livez/")
        || path.starts_with("/readyz/")
}

pub struct Authenticator {
    tokens: HashMap<String, UserInfo>,
}

impl Authenticator {
    pub fn new(tokens: HashMap<String, UserInfo>) -> Self {
        Self { tokens }
    }

    /// Who sent this request: the verified client certificate wins, then a bearer token.
    /// Like upstream's `AuthenticatedGroupAdder`, every authenticated user (certificate or
    /// token) is also in `system:authenticated`.
    pub fn authenticate(
        &self,
        peer: Option<&UserInfo>,
        authorization: Option<&str>,
    ) -> Option<UserInfo> {
        let mut u = match peer {
            Some(p) => p.clone(),
            None => self
                .tokens
                .get(authorization?.strip_prefix("Bearer ")?.trim())?
                .clone(),
        };
        if !u.groups.iter().any(|g| g == "system:authenticated") {
            u.groups.push("system:authenticated".into());
        }
        Some(u)
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

    #[test]
    fn tokens_and_certs() {
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
        let u = a.authenticate(None, Some("Bearer s3cret")).unwrap();
        assert_eq!(u.name, "alice");
        assert!(u.groups.contains(&"system:authenticated".to_string()));
        assert!(a.authenticate(None, Some("Bearer nope")).is_none());
        assert!(a.authenticate(None, None).is_none());
        let peer = UserInfo {
            name: "admin".into(),
            uid: String::new(),
            groups: vec!["system:masters".into()],
        };
        let admin = a.authenticate(Some(&peer), Some("Bearer nope")).unwrap();
        assert_eq!(admin.name, "admin");
        assert_eq!(admin.groups, ["system:masters", "system:authenticated"]);
        assert!(is_public("/readyz") && is_public("/version") && !is_public("/api"));
    }
}
