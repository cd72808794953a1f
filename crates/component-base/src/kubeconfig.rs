//! Writing kubeconfig files that `kubectl`, kube-rs and client-go all accept.
//!
//! A written file holds exactly one cluster, one user and one context, all named after the
//! cluster, with the context selected as `current-context`. Credentials are embedded
//! (`*-data` fields, base64 PEM) rather than referenced by path, so the file stays valid when
//! copied elsewhere; it is therefore written with mode `0600`, via a temporary file and rename.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Serialize;

/// How the kubeconfig's user authenticates.
#[derive(Clone, PartialEq, Eq)]
pub enum KubeconfigAuth {
    /// A client certificate and its private key, both PEM.
    ClientCert {
        /// The client certificate (PEM).
        cert_pem: String,
        /// The client private key (PEM).
        key_pem: String,
    },
    /// A bearer token.
    Token(String),
}

impl std::fmt::Debug for KubeconfigAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets: logs and panics end up in CI output.
        match self {
            Self::ClientCert { .. } => f.write_str("ClientCert { .. }"),
            Self::Token(_) => f.write_str("Token(..)"),
        }
    }
}

/// Errors writing a kubeconfig.
#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    /// Creating the parent directory or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Serializing the YAML failed.
    #[error("serializing kubeconfig: {0}")]
    Yaml(#[from] serde_yaml::Error),
}

/// Writes a kubeconfig for `server_url` trusting `ca_pem` to `path` (mode `0600`), creating the
/// parent directory if needed. See [`kubeconfig_yaml`] for the content.
pub fn write_kubeconfig(
    path: &Path,
    cluster_name: &str,
    server_url: &str,
    ca_pem: &str,
    auth: KubeconfigAuth,
    namespace: Option<&str>,
) -> Result<(), KubeconfigError> {
    let yaml = kubeconfig_yaml(cluster_name, server_url, ca_pem, &auth, namespace)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|source| KubeconfigError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    crate::pki::write_file(path, yaml.as_bytes(), 0o600).map_err(|source| KubeconfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The kubeconfig YAML [`write_kubeconfig`] writes: cluster, user and context all named
/// `cluster_name`, `current-context` set, the context's namespace set when given.
pub fn kubeconfig_yaml(
    cluster_name: &str,
    server_url: &str,
    ca_pem: &str,
    auth: &KubeconfigAuth,
    namespace: Option<&str>,
) -> Result<String, KubeconfigError> {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = match auth {
        KubeconfigAuth::ClientCert { cert_pem, key_pem } => User {
            client_certificate_data: Some(b64(cert_pem)),
            client_key_data: Some(b64(key_pem)),
            token: None,
        },
        KubeconfigAuth::Token(token) => User {
            client_certificate_data: None,
            client_key_data: None,
            token: Some(token.clone()),
        },
    };
    let config = Config {
        api_version: "v1",
        kind: "Config",
        clusters: vec![Named {
            name: cluster_name,
            cluster: Some(Cluster {
                server: server_url,
                certificate_authority_data: b64(ca_pem),
            }),
            user: None,
            context: None,
        }],
        users: vec![Named {
            name: cluster_name,
            cluster: None,
            user: Some(user),
            context: None,
        }],
        contexts: vec![Named {
            name: cluster_name,
            cluster: None,
            user: None,
            context: Some(Context {
                cluster: cluster_name,
                user: cluster_name,
                namespace,
            }),
        }],
        current_context: cluster_name,
        preferences: Preferences {},
    };
    Ok(serde_yaml::to_string(&config)?)
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Config<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: Vec<Named<'a>>,
    users: Vec<Named<'a>>,
    contexts: Vec<Named<'a>>,
    current_context: &'a str,
    preferences: Preferences,
}

#[derive(Serialize)]
struct Preferences {}

/// One entry of `clusters`, `users` or `contexts`: a name plus exactly one payload.
#[derive(Serialize)]
struct Named<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<Cluster<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<User>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Context<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster<'a> {
    server: &'a str,
    certificate_authority_data: String,
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    #[serde(skip_serializing_if = "Option::is_none")]
    client_certificate_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_key_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

#[derive(Serialize)]
struct Context<'a> {
    cluster: &'a str,
    user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<&'a str>,
}
