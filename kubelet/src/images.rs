//! Images: the pull policy decision (the runtime always goes to the registry on PullImage, so
//! the kubelet asks ImageStatus first, as upstream's image manager does), registry credentials
//! from imagePullSecrets, per-image pull back-off (ImagePullBackOff), and the import of an
//! air-gapped image directory into the runtime at start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::{Container, Secret};

use crate::cri::{v1, Runtime};

/// Why an image is not available; `reason()` is the container's waiting reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    #[error("Container image {0:?} is not present with pull policy of Never")]
    NeverPull(String),
    #[error("Failed to pull image {image:?}: {message}")]
    Pull { image: String, message: String },
    #[error("Back-off pulling image {0:?}")]
    BackOff(String),
    #[error("InvalidImageName: {0}")]
    InvalidName(String),
}

impl ImageError {
    pub fn reason(&self) -> &'static str {
        match self {
            ImageError::NeverPull(_) => "ErrImageNeverPull",
            ImageError::Pull { .. } => "ErrImagePull",
            ImageError::BackOff(_) => "ImagePullBackOff",
            ImageError::InvalidName(_) => "InvalidImageName",
        }
    }
}

/// What happened, for the events the caller records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageOutcome {
    /// Already present ("Container image ... already present on machine").
    Present { image_ref: String },
    /// Pulled now, in `took`.
    Pulled {
        image_ref: String,
        took: Duration,
        size: u64,
    },
}

/// The pull policy, defaulted as the API server does when it is missing.
pub fn pull_policy(c: &Container) -> &str {
    match c.image_pull_policy.as_deref() {
        Some(p) if !p.is_empty() => p,
        _ => {
            let image = c.image.as_deref().unwrap_or("");
            let tag_part = image.rsplit('/').next().unwrap_or(image);
            if image.contains('@') {
                "IfNotPresent"
            } else if !tag_part.contains(':') || tag_part.ends_with(":latest") {
                "Always"
            } else {
                "IfNotPresent"
            }
        }
    }
}

/// Registry host of an image reference, as docker normalises it.
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => {
            first
        }
        _ => "docker.io",
    }
}

/// Credentials for `image` from `kubernetes.io/dockerconfigjson` / `dockercfg` secrets.
pub fn auth_for(image: &str, secrets: &[Secret]) -> Option<v1::AuthConfig> {
    let host = registry_of(image);
    let hosts_match = |key: &str| {
        let k = key
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let k = k.split('/').next().unwrap_or(k);
        k == host
            || (host == "docker.io" && (k == "index.docker.io" || k == "registry-1.docker.io"))
    };
    for s in secrets {
        let data = s.data.as_ref()?;
        let auths = if let Some(b) = data.get(".dockerconfigjson") {
            serde_json::from_slice::<serde_json::Value>(&b.0)
                .ok()
                .and_then(|v| v.get("auths").cloned())
        } else if let Some(b) = data.get(".dockercfg") {
            serde_json::from_slice::<serde_json::Value>(&b.0).ok()
        } else {
            None
        };
        let Some(serde_json::Value::Object(auths)) = auths else {
            continue;
        };
        for (key, entry) in auths {
            if !hosts_match(&key) {
                continue;
            }
            let get = |f: &str| {
                entry
                    .get(f)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let (mut username, mut password) = (get("username"), get("password"));
            let auth = get("auth");
            if username.is_empty() && !auth.is_empty() {
                if let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(&auth) {
                    if let Some((u, p)) = String::from_utf8_lossy(&raw).split_once(':') {
                        username = u.to_string();
                        password = p.to_string();
                    }
                }
            }
            return Some(v1::AuthConfig {
                username,
                password,
                auth,
                server_address: key.clone(),
                identity_token: get("identitytoken"),
                registry_token: get("registrytoken"),
            });
        }
    }
    None
}

/// Per-image exponential back-off after failed pulls (10 s doubling to 5 min).
#[derive(Default)]
pub struct PullBackoff {
    entries: Mutex<HashMap<String, (Instant, Duration)>>,
}

const PULL_BACKOFF_INITIAL: Duration = Duration::from_secs(10);
const PULL_BACKOFF_MAX: Duration = Duration::from_secs(300);

impl PullBackoff {
    fn in_backoff(&self, key: &str, now: Instant) -> bool {
        let e = self.entries.lock().unwrap();
        e.get(key).is_some_and(|(at, d)| now < *at + *d)
    }
    fn failed(&self, key: &str, now: Instant) {
        let mut e = self.entries.lock().unwrap();
        let next = match e.get(key) {
            Some((_, d)) => (*d * 2).min(PULL_BACKOFF_MAX),
            None => PULL_BACKOFF_INITIAL,
        };
        e.insert(key.to_string(), (now, next));
    }
    fn succeeded(&self, key: &str) {
        self.entries.lock().unwrap().remove(key);
    }
}

/// Make sure `image` is present according to `policy`. `backoff_key` scopes the back-off
/// (upstream: pod uid + image).
pub async fn ensure_image(
    rt: &dyn Runtime,
    backoff: &PullBackoff,
    backoff_key: &str,
    image: &str,
    policy: &str,
    auth: Option<v1::AuthConfig>,
    sandbox: Option<v1::PodSandboxConfig>,
) -> Result<ImageOutcome, ImageError> {
    if image.trim().is_empty() || image.contains(char::is_whitespace) {
        return Err(ImageError::InvalidName(format!(
            "invalid reference format: {image:?}"
        )));
    }
    let present = rt
        .image_status(image.to_string())
        .await
        .map_err(|e| ImageError::Pull {
            image: image.to_string(),
            message: e.to_string(),
        })?;
    if policy != "Always" {
        if let Some(img) = present {
            return Ok(ImageOutcome::Present { image_ref: img.id });
        }
        if policy == "Never" {
            return Err(ImageError::NeverPull(image.to_string()));
        }
    }
    if backoff.in_backoff(backoff_key, Instant::now()) {
        return Err(ImageError::BackOff(image.to_string()));
    }
    let started = Instant::now();
    match rt.pull_image(image.to_string(), auth, sandbox).await {
        Ok(image_ref) => {
            backoff.succeeded(backoff_key);
            let size = rt
                .image_status(image.to_string())
                .await
                .ok()
                .flatten()
                .map(|i| i.size)
                .unwrap_or(0);
            Ok(ImageOutcome::Pulled {
                image_ref,
                took: started.elapsed(),
                size,
            })
        }
        Err(e) => {
            // Offline nodes: a policy of Always must not break images imported for air-gapped
            // use; upstream would fail here, but a present image is a usable fallback only when
            // the registry is unreachable, which is what the error says.
            if let Some(img) = present {
                let msg = e.to_string();
                if msg.contains("no such host")
                    || msg.contains("dial tcp")
                    || msg.contains("connection refused")
                    || msg.contains("i/o timeout")
                {
                    tracing::debug!(image, error = %msg, "registry unreachable, using the present image");
                    return Ok(ImageOutcome::Present { image_ref: img.id });
                }
            }
            backoff.failed(backoff_key, Instant::now());
            Err(ImageError::Pull {
                image: image.to_string(),
                message: e.to_string(),
            })
        }
    }
}

/// Import every image archive (`*.tar`, `*.tar.gz`, `*.tgz`) of `dir` into the runtime's
/// `k8s.io` namespace with `ctr`, skipping archives imported before (same size and mtime,
/// remembered in `state_file`). Returns the archives imported now.
pub async fn import_dir(
    ctr: &Path,
    endpoint: &str,
    dir: &Path,
    state_file: &Path,
) -> std::io::Result<Vec<PathBuf>> {
    let socket = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    let done: HashMap<String, String> = std::fs::read_to_string(state_file)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    let mut next = done.clone();
    let mut imported = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            n.ends_with(".tar") || n.ends_with(".tar.gz") || n.ends_with(".tgz")
        })
        .collect();
    entries.sort();
    for path in entries {
        let meta = std::fs::metadata(&path)?;
        let stamp = format!(
            "{}:{}",
            meta.len(),
            meta.modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let key = path.to_string_lossy().to_string();
        if done.get(&key) == Some(&stamp) {
            continue;
        }
        let out = tokio::process::Command::new(ctr)
            .args(["-a", socket, "-n", "k8s.io", "images", "import"])
            .arg(&path)
            .output()
            .await?;
        if !out.status.success() {
            return Err(std::io::Error::other(format!(
                "importing {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        next.insert(key, stamp);
        imported.push(path);
    }
    if next != done {
        if let Some(p) = state_file.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::write(state_file, serde_json::to_vec(&next)?)?;
    }
    Ok(imported)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::fake::FakeRuntime;
    use k8s_openapi::ByteString;

    fn container(image: &str, policy: Option<&str>) -> Container {
        Container {
            name: "c".into(),
            image: Some(image.into()),
            image_pull_policy: policy.map(str::to_string),
            ..Default::default()
        }
    }

    #[test]
    fn default_pull_policies() {
        assert_eq!(pull_policy(&container("nginx", None)), "Always");
        assert_eq!(pull_policy(&container("nginx:latest", None)), "Always");
        assert_eq!(pull_policy(&container("nginx:1.25", None)), "IfNotPresent");
        assert_eq!(pull_policy(&container("localhost:5000/x", None)), "Always");
        assert_eq!(
            pull_policy(&container("localhost:5000/x:1", None)),
            "IfNotPresent"
        );
        assert_eq!(pull_policy(&container("nginx", Some("Never"))), "Never");
    }

    #[test]
    fn credentials_come_from_the_matching_registry() {
        let cfg = serde_json::json!({"auths": {
            "https://index.docker.io/v1/": {"auth": base64::engine::general_purpose::STANDARD.encode("u:p")},
            "registry.example.com": {"username": "a", "password": "b"}
        }});
        let secret = Secret {
            data: Some(
                [(
                    ".dockerconfigjson".to_string(),
                    ByteString(serde_json::to_vec(&cfg).unwrap()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let a = auth_for("nginx", std::slice::from_ref(&secret)).unwrap();
        assert_eq!((a.username.as_str(), a.password.as_str()), ("u", "p"));
        let b = auth_for(
            "registry.example.com/team/app:1",
            std::slice::from_ref(&secret),
        )
        .unwrap();
        assert_eq!(b.username, "a");
        assert!(auth_for("quay.io/x", &[secret]).is_none());
    }

    #[tokio::test]
    async fn policies_decide_between_status_and_pull() {
        let rt = FakeRuntime::new().with_images(&["busybox:1.36"]);
        let b = PullBackoff::default();
        let r = ensure_image(&rt, &b, "k", "busybox:1.36", "IfNotPresent", None, None).await;
        assert!(matches!(r, Ok(ImageOutcome::Present { .. })));
        assert_eq!(rt.calls(), vec!["ImageStatus busybox:1.36"]);

        let r = ensure_image(&rt, &b, "k", "nginx:1", "Never", None, None).await;
        assert_eq!(r.unwrap_err().reason(), "ErrImageNeverPull");

        rt.clear_calls();
        let r = ensure_image(&rt, &b, "k", "nginx:1", "IfNotPresent", None, None).await;
        assert!(matches!(r, Ok(ImageOutcome::Pulled { .. })));
        assert!(rt.calls().contains(&"PullImage nginx:1".to_string()));
    }

    #[tokio::test]
    async fn failed_pulls_back_off() {
        let rt = FakeRuntime::new();
        let b = PullBackoff::default();
        rt.fail_next("PullImage", "failed to resolve reference");
        let r = ensure_image(&rt, &b, "k", "nope:1", "IfNotPresent", None, None).await;
        assert_eq!(r.unwrap_err().reason(), "ErrImagePull");
        let r = ensure_image(&rt, &b, "k", "nope:1", "IfNotPresent", None, None).await;
        assert_eq!(r.unwrap_err().reason(), "ImagePullBackOff");
    }
}
