//! Turning an HTTP request line into what the API is asked: which resource, namespace, name and
//! subresource, which verb, and the query options. Pure parsing, no I/O.

use crate::resources::{self, Resource};
use apimachinery::errors::ApiError;

/// A decoded query string; keys may repeat (`command=sh&command=-c`).
#[derive(Debug, Default, Clone)]
pub struct Query(pub Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Self {
        let mut out = Vec::new();
        if let Some(q) = q {
            for part in q.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = part.split_once('=').unwrap_or((part, ""));
                out.push((percent_decode(k), percent_decode(v)));
            }
        }
        Self(out)
    }
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("true") | Some("1") | Some(""))
    }
    /// Parse an integer option, with upstream's error if it is not one.
    pub fn int(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key) {
            None | Some("") => Ok(None),
            Some(v) => v.parse::<i64>().map(Some).map_err(|_| {
                ApiError::bad_request(format!("invalid value for {key}: {v:?} is not an integer"))
            }),
        }
    }
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match h {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What a resource path names.
#[derive(Debug, Clone)]
pub struct Target {
    pub resource: &'static Resource,
    pub version: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// Remaining path after a `proxy` subresource (for pods/services/nodes proxy).
    pub subpath: Option<String>,
}

impl Target {
    pub fn api_version(&self) -> String {
        self.resource.api_version(&self.version)
    }
}

/// What an `/api` or `/apis` path asks for.
#[derive(Debug)]
pub enum Route {
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<group>/<version>`
    Resources {
        group: String,
        version: String,
    },
    Resource(Target),
}

/// Parse an `/api...` or `/apis...` path. Errors are 404s with upstream's wording.
pub fn route(path: &str) -> Result<Route, ApiError> {
    let segs: Vec<String> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["api", v, rest @ ..] => ("", v, rest),
        ["apis", g] => {
            return if resources::groups().iter().any(|(gg, _)| gg == g) {
                Ok(Route::Group(g.to_string()))
            } else {
                Err(not_found_path())
            }
        }
        ["apis", g, v, rest @ ..] => (g, v, rest),
        _ => return Err(not_found_path()),
    };
    if !resources::groups()
        .iter()
        .any(|(g, vs)| *g == group && vs.contains(&version))
    {
        return Err(not_found_path());
    }
    if rest.is_empty() {
        return Ok(Route::Resources {
            group: group.into(),
            version: version.into(),
        });
    }
    // /namespaces/{ns}/{resource}/... unless it is the namespace object's own subresource.
    let (namespace, rest) = if rest.len() >= 3 && rest[0] == "namespaces" {
        if group.is_empty() && rest.len() == 3 && matches!(rest[2], "status" | "finalize") {
            (None, rest)
        } else {
            (Some(rest[1].to_string()), &rest[2..])
        }
    } else {
        (None, rest)
    };
    let plural = rest[0];
    let resource = resources::lookup(group, version, plural).ok_or_else(not_found_path)?;
    if namespace.is_some() && !resource.namespaced {
        return Err(not_found_path());
    }
    let name = rest.get(1).map(|s| s.to_string());
    let subresource = rest.get(2).map(|s| s.to_string());
    if let Some(sub) = &subresource {
        if !resource.has_subresource(sub) {
            return Err(not_found_path());
        }
        if rest.len() > 3 && sub != "proxy" {
            return Err(not_found_path());
        }
    }
    let subpath = if rest.len() > 3 {
        Some(rest[3..].join("/"))
    } else {
        None
    };
    Ok(Route::Resource(Target {
        resource,
        version: version.to_string(),
        namespace,
        name,
        subresource,
        subpath,
    }))
}

pub fn not_found_path() -> ApiError {
    ApiError::new(
        apimachinery::errors::Reason::NotFound,
        "the server could not find the requested resource",
    )
    .with_details(serde_json::json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(p: &str) -> Target {
        match route(p).unwrap() {
            Route::Resource(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_resource_paths() {
        let t = target("/api/v1/namespaces/default/pods/web/status");
        assert_eq!(
            (
                t.resource.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("pods", Some("default"), Some("web"), Some("status"))
        );
        let t = target("/api/v1/namespaces/kube-system");
        assert_eq!(
            (t.resource.plural, t.namespace.as_deref(), t.name.as_deref()),
            ("namespaces", None, Some("kube-system"))
        );
        let t = target("/api/v1/namespaces/team/finalize");
        assert_eq!(
            (
                t.resource.plural,
                t.name.as_deref(),
                t.subresource.as_deref()
            ),
            ("namespaces", Some("team"), Some("finalize"))
        );
        let t = target("/apis/apps/v1/deployments");
        assert_eq!(
            (t.resource.plural, t.namespace.as_deref()),
            ("deployments", None)
        );
        let t = target("/api/v1/namespaces/default/services/web:80/proxy/a/b");
        assert_eq!(
            (t.name.as_deref(), t.subpath.as_deref()),
            (Some("web:80"), Some("a/b"))
        );
        assert!(route("/api/v1/namespaces/default/nodes").is_err());
        assert!(route("/apis/nope/v1/things").is_err());
        assert!(route("/api/v1/pods/x/bogus").is_err());
    }

    #[test]
    fn decodes_query() {
        let q = Query::parse(Some(
            "labelSelector=run%3Dx&command=sh&command=-c&watch=true&a+b=c+d",
        ));
        assert_eq!(q.get("labelSelector"), Some("run=x"));
        assert_eq!(q.all("command"), vec!["sh", "-c"]);
        assert!(q.flag("watch"));
        assert_eq!(q.get("a b"), Some("c d"));
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
