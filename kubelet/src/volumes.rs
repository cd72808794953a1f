//! Pod volumes, laid out as upstream's volume plugins do under
//! `<root-dir>/pods/<uid>/volumes/kubernetes.io~<plugin>/<volume-name>`: emptyDir (a tmpfs for
//! medium Memory), hostPath (with its type checks), configMap, secret (on a tmpfs), downwardAPI
//! and projected (service account token, configMaps, secrets, downward API) written with
//! upstream's atomic layout, and persistentVolumeClaims bound to hostPath or local volumes.
//!
//! [`VolumeManager::mount_pod`] runs on every pod sync and is cheap when nothing changed: static
//! volumes (emptyDir, hostPath, claims) are set up once per kubelet lifetime, and the contents of
//! the others are recomputed from a shared short-lived object cache and written only when their
//! hash differs from the last write — in place and atomically, so containers see updates.
//! A refresh that fails after a volume was set up keeps the old contents (as upstream, a running
//! pod is not failed by a later remount error).

pub mod atomic_writer;
pub mod downward;
pub mod mount;
pub mod source;

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, DownwardAPIVolumeFile, EmptyDirVolumeSource, KeyToPath, Pod, ProjectedVolumeSource,
    Secret, ServiceAccountTokenProjection, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tracing::{info, warn};

use atomic_writer::{FileProjection, Payload};
pub use downward::NodeAllocatable;
pub use source::{ApiSource, MemorySource, ObjectSource, SourceError};

/// A volume ready on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostVolume {
    pub host_path: PathBuf,
    /// The volume itself is read-only (configMap, secret, downwardAPI, projected; or readOnly
    /// set on the source).
    pub read_only: bool,
}

/// Set-up failure of one volume; the message is the FailedMount event's.
#[derive(Debug, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
pub struct VolumeError {
    pub volume: String,
    pub message: String,
}

const DEFAULT_MODE: u32 = 0o644;
const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// How long a legacy (Secret) token, or the absence of one, is trusted before looking again.
const LEGACY_TOKEN_TTL: Duration = Duration::from_secs(60);

/// A volume set up for a pod.
struct Mounted {
    volume: HostVolume,
    /// Hash of the last payload written; `None` for volumes set up once (emptyDir, hostPath,
    /// claims).
    content: Option<u64>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    namespace: String,
    service_account: String,
    audience: String,
    expiration_seconds: i64,
    pod_uid: String,
}

struct CachedToken {
    token: String,
    issued: SystemTime,
    expires: SystemTime,
}

impl CachedToken {
    /// Upstream's token manager: refresh after 80% of the lifetime or 24 hours.
    fn needs_refresh(&self, now: SystemTime) -> bool {
        let ttl = self.expires.duration_since(self.issued).unwrap_or_default();
        let refresh_at = self.issued + (ttl.mul_f64(0.8)).min(Duration::from_secs(24 * 3600));
        now >= refresh_at
    }
}

/// Sets up and tears down the volumes of the node's pods.
pub struct VolumeManager {
    source: Arc<dyn ObjectSource>,
    root_dir: PathBuf,
    use_tmpfs: bool,
    allocatable: RwLock<NodeAllocatable>,
    pods: Mutex<HashMap<String, HashMap<String, Mounted>>>,
    tokens: Mutex<HashMap<TokenKey, CachedToken>>,
    warned_no_token: Mutex<HashSet<String>>,
}

impl VolumeManager {
    pub fn new(client: kube::Client, root_dir: PathBuf) -> Self {
        Self::with_source(Arc::new(ApiSource::new(client)), root_dir)
    }

    /// A manager reading objects from `source` (tests use a [`MemorySource`]).
    pub fn with_source(source: Arc<dyn ObjectSource>, root_dir: PathBuf) -> Self {
        VolumeManager {
            source,
            root_dir,
            use_tmpfs: mount::is_root(),
            allocatable: RwLock::new(NodeAllocatable::from_host()),
            pods: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            warned_no_token: Mutex::new(HashSet::new()),
        }
    }

    /// Whether memory-backed volumes (emptyDir medium Memory, secret, projected) get a tmpfs.
    /// On by default when running as root; without it they are plain directories.
    pub fn with_tmpfs(mut self, on: bool) -> Self {
        self.use_tmpfs = on;
        self
    }

    /// The node's allocatable resources: the default for unset container limits in
    /// `resourceFieldRef`, and the size bound of memory-backed volumes. Defaults to the host's
    /// CPUs and memory.
    pub fn set_node_allocatable(&self, alloc: NodeAllocatable) {
        *self.allocatable.write().unwrap() = alloc;
    }

    /// Set up (or refresh: configMap/secret/projected contents are updated in place) every
    /// volume of the pod; returns them by volume name. Every volume is attempted; the first
    /// failure is returned.
    pub async fn mount_pod(&self, pod: &Pod) -> Result<HashMap<String, HostVolume>, VolumeError> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        if !valid_uid(uid) {
            return Err(VolumeError {
                volume: String::new(),
                message: format!("invalid pod uid {uid:?}"),
            });
        }
        let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_deref());
        let mut out = HashMap::new();
        let mut first_err = None;
        for v in volumes.unwrap_or_default() {
            let prev = self
                .pods
                .lock()
                .unwrap()
                .get(uid)
                .and_then(|m| m.get(&v.name))
                .map(|m| (m.volume.clone(), m.content));
            match self.set_up(pod, uid, v, prev.as_ref()).await {
                Ok(m) => {
                    out.insert(v.name.clone(), m.volume.clone());
                    self.pods
                        .lock()
                        .unwrap()
                        .entry(uid.to_string())
                        .or_default()
                        .insert(v.name.clone(), m);
                }
                Err(message) => match prev {
                    Some((vol, _)) => {
                        warn!(pod_uid = uid, volume = %v.name, error = %message, "refreshing volume failed; keeping its contents");
                        out.insert(v.name.clone(), vol);
                    }
                    None => {
                        if first_err.is_none() {
                            first_err = Some(VolumeError {
                                volume: v.name.clone(),
                                message,
                            });
                        }
                    }
                },
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }

    /// Tear down the pod's volumes and remove its directory. Mounts under the pod directory
    /// (tmpfs volumes, and anything else mounted there) are unmounted first; the directory is
    /// only removed when nothing is mounted below it any more.
    pub async fn unmount_pod(&self, uid: &str) -> std::io::Result<()> {
        self.pods.lock().unwrap().remove(uid);
        self.tokens.lock().unwrap().retain(|k, _| k.pod_uid != uid);
        if !valid_uid(uid) {
            return Err(std::io::Error::other(format!("invalid pod uid {uid:?}")));
        }
        let pod_dir = self.pod_dir(uid);
        let pod_dir = match std::fs::canonicalize(&pod_dir) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut errors = Vec::new();
        for m in mount::mounts_under(&mount::mounts()?, &pod_dir) {
            if let Err(e) = mount::unmount(&m).await {
                errors.push(format!("{}: {e}", m.display()));
            }
        }
        let left = mount::mounts_under(&mount::mounts()?, &pod_dir);
        if !left.is_empty() {
            return Err(std::io::Error::other(format!(
                "cannot remove {}: still mounted: {left:?} ({})",
                pod_dir.display(),
                errors.join("; ")
            )));
        }
        match tokio::fs::remove_dir_all(&pod_dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Remove volume directories of pods that are gone.
    pub async fn cleanup_orphans(&self, live: &HashSet<String>) {
        self.pods
            .lock()
            .unwrap()
            .retain(|uid, _| live.contains(uid));
        self.tokens
            .lock()
            .unwrap()
            .retain(|k, _| live.contains(&k.pod_uid));
        let Ok(rd) = std::fs::read_dir(self.root_dir.join("pods")) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(uid) = e.file_name().into_string() else {
                continue;
            };
            if live.contains(&uid) || !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            match self.unmount_pod(&uid).await {
                Ok(()) => info!(pod_uid = %uid, "removed orphaned pod directory"),
                Err(e) => warn!(pod_uid = %uid, error = %e, "cleaning up orphaned pod directory"),
            }
        }
    }

    fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid)
    }

    fn volume_dir(&self, uid: &str, plugin: &str, name: &str) -> PathBuf {
        self.pod_dir(uid)
            .join("volumes")
            .join(format!("kubernetes.io~{plugin}"))
            .join(name)
    }

    async fn set_up(
        &self,
        pod: &Pod,
        uid: &str,
        v: &Volume,
        prev: Option<&(HostVolume, Option<u64>)>,
    ) -> Result<Mounted, String> {
        if let Some((vol, None)) = prev {
            return Ok(Mounted {
                volume: vol.clone(),
                content: None,
            });
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let fixed = |host_path: PathBuf, read_only: bool| Mounted {
            volume: HostVolume {
                host_path,
                read_only,
            },
            content: None,
        };
        if let Some(ed) = &v.empty_dir {
            let dir = self.volume_dir(uid, "empty-dir", &v.name);
            self.set_up_empty_dir(pod, &dir, ed).await?;
            return Ok(fixed(dir, false));
        }
        if let Some(hp) = &v.host_path {
            check_host_path(&hp.path, hp.type_.as_deref())?;
            return Ok(fixed(PathBuf::from(&hp.path), false));
        }
        if let Some(c) = &v.persistent_volume_claim {
            let read_only = c.read_only.unwrap_or(false);
            let path = self.claim_path(ns, &c.claim_name, None).await?;
            return Ok(fixed(path, read_only));
        }
        if v.ephemeral.is_some() {
            let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
            let claim = format!("{pod_name}-{}", v.name);
            let path = self.claim_path(ns, &claim, Some(uid)).await?;
            return Ok(fixed(path, false));
        }

        let (plugin, memory, payload) = if let Some(cm) = &v.config_map {
            let mode = mode_of(cm.default_mode);
            let optional = cm.optional.unwrap_or(false);
            let payload = self
                .config_map_files(ns, &cm.name, cm.items.as_deref(), mode, optional)
                .await?;
            ("configmap", false, payload)
        } else if let Some(s) = &v.secret {
            let name = s.secret_name.as_deref().unwrap_or_default();
            let mode = mode_of(s.default_mode);
            let optional = s.optional.unwrap_or(false);
            let payload = self
                .secret_files(ns, name, s.items.as_deref(), mode, optional)
                .await?;
            ("secret", true, payload)
        } else if let Some(d) = &v.downward_api {
            let mode = mode_of(d.default_mode);
            let payload = self.downward_files(pod, d.items.as_deref().unwrap_or_default(), mode)?;
            ("downward-api", false, payload)
        } else if let Some(p) = &v.projected {
            ("projected", true, self.projected_files(pod, p).await?)
        } else {
            return Err("no volume plugin matched (supported: emptyDir, hostPath, configMap, secret, downwardAPI, projected, persistentVolumeClaim, ephemeral)".into());
        };

        let fs_group = fs_group(pod);
        let hash = payload_hash(&payload, fs_group);
        if let Some((vol, Some(h))) = prev {
            if *h == hash {
                return Ok(Mounted {
                    volume: vol.clone(),
                    content: Some(hash),
                });
            }
        }
        let dir = self.volume_dir(uid, plugin, &v.name);
        if prev.is_none() {
            self.prepare_dir(&dir, memory.then(|| self.memory_size(pod, None)))
                .await?;
        }
        let target = dir.clone();
        tokio::task::spawn_blocking(move || atomic_writer::write(&target, &payload, fs_group))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("error writing payload to target dir {}: {e}", dir.display()))?;
        Ok(Mounted {
            volume: HostVolume {
                host_path: dir,
                read_only: true,
            },
            content: Some(hash),
        })
    }

    /// Create `dir`; with `memory` (the size bound), mount a tmpfs on it unless one is there.
    async fn prepare_dir(&self, dir: &Path, memory: Option<Option<i64>>) -> Result<(), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        if let Some(size) = memory {
            if self.use_tmpfs && !mount::is_mount_point(dir) {
                mount::mount_tmpfs(dir, size).await?;
            }
        }
        Ok(())
    }

    async fn set_up_empty_dir(
        &self,
        pod: &Pod,
        dir: &Path,
        ed: &EmptyDirVolumeSource,
    ) -> Result<(), String> {
        let medium = ed.medium.as_deref().unwrap_or_default();
        if medium.starts_with("HugePages") {
            return Err(format!("emptyDir medium {medium:?} is not supported"));
        }
        if !matches!(medium, "" | "Memory") {
            return Err(format!("unknown storage medium {medium:?}"));
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        // emptyDir is world-writable, as upstream makes it (the umask would narrow it).
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
        if medium == "Memory" {
            if self.use_tmpfs {
                if !mount::is_mount_point(dir) {
                    let size = self.memory_size(pod, ed.size_limit.as_ref());
                    mount::mount_tmpfs(dir, size).await?;
                }
            } else {
                warn!(dir = %dir.display(), "no tmpfs (not root): memory-backed emptyDir is a plain directory");
            }
        }
        if let Some(gid) = fs_group(pod) {
            atomic_writer::set_ownership(dir, gid, false).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Upstream's `calculateEmptyDirMemorySize`: node allocatable memory, lowered to the pod's
    /// memory limit and then to the volume's sizeLimit when those are smaller.
    fn memory_size(&self, pod: &Pod, size_limit: Option<&Quantity>) -> Option<i64> {
        let mut size = self.allocatable.read().unwrap().memory;
        if let Some(l) = pod_memory_limit(pod) {
            if l > 0 && (size == 0 || l <= size) {
                size = l;
            }
        }
        if let Some(l) = size_limit.and_then(|q| apimachinery::quantity::value(&q.0)) {
            if l > 0 && (size == 0 || l <= size) {
                size = l;
            }
        }
        (size > 0).then_some(size)
    }

    /// The host path of the volume bound to claim `ns/claim`. `owner`: the claim must be
    /// controlled by this pod (generic ephemeral volumes).
    async fn claim_path(
        &self,
        ns: &str,
        claim: &str,
        owner: Option<&str>,
    ) -> Result<PathBuf, String> {
        let prefix = format!("error processing PVC {ns}/{claim}");
        let pvc = self
            .source
            .persistent_volume_claim(ns, claim)
            .await
            .map_err(|e| format!("{prefix}: failed to fetch PVC from API server: {e}"))?
            .ok_or_else(|| {
                format!("{prefix}: failed to fetch PVC from API server: persistentvolumeclaims {claim:?} not found")
            })?;
        if let Some(uid) = owner {
            let owned = pvc
                .metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid && o.controller == Some(true));
            if !owned {
                return Err(format!(
                    "PVC {ns}/{claim} was not created for pod (pod is not owner)"
                ));
            }
        }
        if pvc.metadata.deletion_timestamp.is_some() {
            return Err(format!(
                "can't start pod because PVC {ns}/{claim} is being deleted"
            ));
        }
        let phase = pvc.status.as_ref().and_then(|s| s.phase.as_deref());
        let pv_name = pvc
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .unwrap_or_default();
        if phase != Some("Bound") || pv_name.is_empty() {
            return Err(format!("{prefix}: PVC is not bound"));
        }
        let pv = self
            .source
            .persistent_volume(pv_name)
            .await
            .map_err(|e| format!("{prefix}: failed to fetch PV {pv_name} from API server: {e}"))?
            .ok_or_else(|| {
                format!("{prefix}: failed to fetch PV {pv_name} from API server: persistentvolumes {pv_name:?} not found")
            })?;
        let spec = pv.spec.as_ref();
        let claim_uid = pvc.metadata.uid.as_deref().unwrap_or_default();
        match spec.and_then(|s| s.claim_ref.as_ref()) {
            None => {
                return Err(format!("{prefix}: found PV object {pv_name} but it has a nil pv.Spec.ClaimRef indicating it is not yet bound to the claim"));
            }
            Some(r) if r.uid.as_deref().unwrap_or_default() != claim_uid => {
                return Err(format!(
                    "{prefix}: found PV object {pv_name} but its pv.Spec.ClaimRef.UID {} does not point to claim.UID {claim_uid}",
                    r.uid.as_deref().unwrap_or_default()
                ));
            }
            Some(_) => {}
        }
        if let Some(hp) = spec.and_then(|s| s.host_path.as_ref()) {
            check_host_path(&hp.path, hp.type_.as_deref())?;
            return Ok(PathBuf::from(&hp.path));
        }
        if let Some(local) = spec.and_then(|s| s.local.as_ref()) {
            if !Path::new(&local.path).exists() {
                return Err(format!(
                    "local volume {pv_name}: path {:?} does not exist",
                    local.path
                ));
            }
            return Ok(PathBuf::from(&local.path));
        }
        Err(format!(
            "{prefix}: PV {pv_name} has a volume source this node cannot mount (only hostPath and local are supported)"
        ))
    }

    async fn config_map_files(
        &self,
        ns: &str,
        name: &str,
        items: Option<&[KeyToPath]>,
        default_mode: u32,
        optional: bool,
    ) -> Result<Payload, String> {
        let cm = match self
            .source
            .config_map(ns, name)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(cm) => cm,
            None if optional => Arc::new(ConfigMap::default()),
            None => return Err(format!("configmap {name:?} not found")),
        };
        config_map_payload(&cm, items, default_mode, optional)
    }

    async fn secret_files(
        &self,
        ns: &str,
        name: &str,
        items: Option<&[KeyToPath]>,
        default_mode: u32,
        optional: bool,
    ) -> Result<Payload, String> {
        let s = match self
            .source
            .secret(ns, name)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(s) => s,
            None if optional => Arc::new(Secret::default()),
            None => return Err(format!("secret {name:?} not found")),
        };
        secret_payload(&s, items, default_mode, optional)
    }

    fn downward_files(
        &self,
        pod: &Pod,
        items: &[DownwardAPIVolumeFile],
        default_mode: u32,
    ) -> Result<Payload, String> {
        let alloc = *self.allocatable.read().unwrap();
        let mut payload = Payload::new();
        let mut errors = Vec::new();
        for it in items {
            let value = if let Some(f) = &it.field_ref {
                downward::field_ref_value(pod, &f.field_path)
            } else if let Some(r) = &it.resource_field_ref {
                let name = r.container_name.as_deref().unwrap_or_default();
                match downward::find_container(pod, name) {
                    Some(c) => downward::resource_field_value(c, r, &alloc),
                    None => Err(format!("container {name} not found")),
                }
            } else {
                continue;
            };
            match value {
                Ok(v) => {
                    payload.insert(
                        it.path.clone(),
                        FileProjection {
                            data: v.into_bytes(),
                            mode: it.mode.map_or(default_mode, |m| m as u32),
                        },
                    );
                }
                Err(e) => errors.push(e),
            }
        }
        aggregate(errors).map(|()| payload)
    }

    async fn projected_files(
        &self,
        pod: &Pod,
        src: &ProjectedVolumeSource,
    ) -> Result<Payload, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let default_mode = mode_of(src.default_mode);
        let mut payload = Payload::new();
        let mut errors = Vec::new();
        for s in src.sources.iter().flatten() {
            let part = if let Some(sec) = &s.secret {
                let optional = sec.optional.unwrap_or(false);
                self.secret_files(ns, &sec.name, sec.items.as_deref(), default_mode, optional)
                    .await
            } else if let Some(cm) = &s.config_map {
                let optional = cm.optional.unwrap_or(false);
                self.config_map_files(ns, &cm.name, cm.items.as_deref(), default_mode, optional)
                    .await
            } else if let Some(d) = &s.downward_api {
                self.downward_files(pod, d.items.as_deref().unwrap_or_default(), default_mode)
            } else if let Some(tp) = &s.service_account_token {
                // With an fsGroup the ownership step widens 0600 to 0640, as upstream.
                let mode = if fs_group(pod).is_some() {
                    0o600
                } else {
                    default_mode
                };
                self.service_account_token(pod, tp).await.map(|token| {
                    Payload::from([(
                        tp.path.clone(),
                        FileProjection {
                            data: token.into_bytes(),
                            mode,
                        },
                    )])
                })
            } else {
                Err("projected volume source not supported on this node (clusterTrustBundle, podCertificate)".into())
            };
            match part {
                Ok(p) => payload.extend(p),
                Err(e) => errors.push(e),
            }
        }
        aggregate(errors).map(|()| payload)
    }

    /// A token for the pod's service account: from the TokenRequest API (cached, refreshed
    /// after 80% of its lifetime); where the API server does not serve TokenRequest, from the
    /// account's legacy token Secret, or empty when there is none.
    async fn service_account_token(
        &self,
        pod: &Pod,
        tp: &ServiceAccountTokenProjection,
    ) -> Result<String, String> {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let spec = pod.spec.as_ref();
        let sa = spec
            .and_then(|s| {
                s.service_account_name
                    .as_deref()
                    .or(s.service_account.as_deref())
            })
            .filter(|s| !s.is_empty())
            .unwrap_or("default");
        let key = TokenKey {
            namespace: ns.to_string(),
            service_account: sa.to_string(),
            audience: tp.audience.clone().unwrap_or_default(),
            expiration_seconds: tp.expiration_seconds.unwrap_or(3600),
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
        };
        let now = SystemTime::now();
        let cached = {
            let tokens = self.tokens.lock().unwrap();
            tokens
                .get(&key)
                .map(|t| (t.token.clone(), t.needs_refresh(now), t.expires > now))
        };
        if let Some((token, false, _)) = &cached {
            return Ok(token.clone());
        }
        let req = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(if key.audience.is_empty() {
                    vec![]
                } else {
                    vec![key.audience.clone()]
                }),
                expiration_seconds: Some(key.expiration_seconds),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let fresh = match self.source.request_token(ns, sa, req).await {
            Ok(tr) => tr.status.and_then(|s| {
                let expires = s.expiration_timestamp.map_or(
                    now + Duration::from_secs(key.expiration_seconds.max(0) as u64),
                    |t| SystemTime::UNIX_EPOCH + Duration::from_secs(t.0.as_second().max(0) as u64),
                );
                Some((s.token?, expires))
            }),
            Err(SourceError::NotServed(_)) => {
                Some((self.legacy_token(ns, sa).await?, now + LEGACY_TOKEN_TTL))
            }
            Err(SourceError::Api(e)) => {
                if let Some((token, _, true)) = cached {
                    warn!(namespace = ns, service_account = sa, error = %e, "token refresh failed; using the current token");
                    return Ok(token);
                }
                return Err(format!("failed to fetch token: {e}"));
            }
        };
        let (token, expires) =
            fresh.ok_or_else(|| "failed to fetch token: empty TokenRequest status".to_string())?;
        self.tokens.lock().unwrap().insert(
            key,
            CachedToken {
                token: token.clone(),
                issued: now,
                expires,
            },
        );
        Ok(token)
    }

    /// The token of a `kubernetes.io/service-account-token` Secret of the account; empty when
    /// there is none (logged once per account), so pods still start.
    async fn legacy_token(&self, ns: &str, sa: &str) -> Result<String, String> {
        let account = self
            .source
            .service_account(ns, sa)
            .await
            .map_err(|e| format!("failed to fetch token: {e}"))?
            .ok_or_else(|| format!("failed to fetch token: serviceaccounts {sa:?} not found"))?;
        let referenced: HashSet<&str> = account
            .secrets
            .iter()
            .flatten()
            .filter_map(|r| r.name.as_deref())
            .collect();
        let secrets = self
            .source
            .service_account_token_secrets(ns)
            .await
            .map_err(|e| format!("failed to fetch token: {e}"))?;
        let token = secrets
            .iter()
            .filter(|s| s.type_.as_deref() == Some(SERVICE_ACCOUNT_TOKEN_TYPE))
            .filter(|s| {
                let ann = s.metadata.annotations.as_ref();
                let for_sa = ann
                    .and_then(|a| a.get("kubernetes.io/service-account.name"))
                    .is_some_and(|n| n == sa);
                let uid_ok = ann
                    .and_then(|a| a.get("kubernetes.io/service-account.uid"))
                    .is_none_or(|u| Some(u) == account.metadata.uid.as_ref());
                (for_sa && uid_ok)
                    || referenced.contains(s.metadata.name.as_deref().unwrap_or_default())
            })
            .find_map(|s| s.data.as_ref()?.get("token").map(|t| t.0.clone()))
            .filter(|t| !t.is_empty());
        match token {
            Some(t) => Ok(String::from_utf8_lossy(&t).into_owned()),
            None => {
                if self
                    .warned_no_token
                    .lock()
                    .unwrap()
                    .insert(format!("{ns}/{sa}"))
                {
                    warn!(namespace = ns, service_account = sa, "the API server does not serve TokenRequest and the service account has no token Secret: projecting an empty token");
                }
                Ok(String::new())
            }
        }
    }
}

/// A pod uid that is one safe path element.
fn valid_uid(uid: &str) -> bool {
    !uid.is_empty() && uid != "." && uid != ".." && !uid.contains('/')
}

fn mode_of(m: Option<i32>) -> u32 {
    m.map_or(DEFAULT_MODE, |m| m as u32 & 0o7777)
}

fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec
        .as_ref()?
        .security_context
        .as_ref()?
        .fs_group
        .and_then(|g| u32::try_from(g).ok())
}

fn payload_hash(p: &Payload, fs_group: Option<u32>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    p.hash(&mut h);
    fs_group.hash(&mut h);
    h.finish()
}

/// Upstream's `utilerrors.NewAggregate` message.
fn aggregate(errors: Vec<String>) -> Result<(), String> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.into_iter().next().unwrap_or_default()),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

/// The pod's memory limit when every app container has one (the pod cgroup's limit).
fn pod_memory_limit(pod: &Pod) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let limit = |c: &k8s_openapi::api::core::v1::Container| {
        c.resources
            .as_ref()?
            .limits
            .as_ref()?
            .get("memory")
            .and_then(|q| apimachinery::quantity::value(&q.0))
            .filter(|v| *v > 0)
    };
    let mut sum = 0i64;
    for c in &spec.containers {
        sum = sum.saturating_add(limit(c)?);
    }
    let init_max = spec
        .init_containers
        .iter()
        .flatten()
        .filter_map(limit)
        .max()
        .unwrap_or(0);
    Some(sum.max(init_max))
}

/// Upstream's configMap `MakePayload`.
pub fn config_map_payload(
    cm: &ConfigMap,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, String> {
    let lookup = |k: &str| -> Option<Vec<u8>> {
        cm.data
            .as_ref()
            .and_then(|d| d.get(k))
            .map(|s| s.clone().into_bytes())
            .or_else(|| {
                cm.binary_data
                    .as_ref()
                    .and_then(|d| d.get(k))
                    .map(|b| b.0.clone())
            })
    };
    let mut payload = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            let keys = cm.data.iter().flat_map(|d| d.keys());
            let bin_keys = cm.binary_data.iter().flat_map(|d| d.keys());
            for k in keys.chain(bin_keys) {
                if let Some(data) = lookup(k) {
                    payload.insert(
                        k.clone(),
                        FileProjection {
                            data,
                            mode: default_mode,
                        },
                    );
                }
            }
        }
        Some(items) => {
            for it in items {
                let Some(data) = lookup(&it.key) else {
                    if optional {
                        continue;
                    }
                    return Err(format!(
                        "configmap references non-existent config key: {}",
                        it.key
                    ));
                };
                payload.insert(
                    it.path.clone(),
                    FileProjection {
                        data,
                        mode: it.mode.map_or(default_mode, |m| m as u32 & 0o7777),
                    },
                );
            }
        }
    }
    Ok(payload)
}

/// Upstream's secret `MakePayload`.
pub fn secret_payload(
    s: &Secret,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, String> {
    let empty = Default::default();
    let data = s.data.as_ref().unwrap_or(&empty);
    let mut payload = Payload::new();
    match items.filter(|i| !i.is_empty()) {
        None => {
            for (k, v) in data {
                payload.insert(
                    k.clone(),
                    FileProjection {
                        data: v.0.clone(),
                        mode: default_mode,
                    },
                );
            }
        }
        Some(items) => {
            for it in items {
                let Some(v) = data.get(&it.key) else {
                    if optional {
                        continue;
                    }
                    return Err(format!("references non-existent secret key: {}", it.key));
                };
                payload.insert(
                    it.path.clone(),
                    FileProjection {
                        data: v.0.clone(),
                        mode: it.mode.map_or(default_mode, |m| m as u32 & 0o7777),
                    },
                );
            }
        }
    }
    Ok(payload)
}

/// Upstream's hostPath type checks (and creation for the `*OrCreate` types).
pub fn check_host_path(path: &str, type_: Option<&str>) -> Result<(), String> {
    let p = Path::new(path);
    let meta = || std::fs::metadata(p).ok();
    let fail = |what: &str| Err(format!("hostPath type check failed: {path} is not {what}"));
    match type_.unwrap_or_default() {
        "" => Ok(()),
        t @ ("DirectoryOrCreate" | "Directory") => {
            if t == "DirectoryOrCreate" && meta().is_none() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(p)
                    .map_err(|e| format!("mkdir {path}: {e}"))?;
            }
            match meta() {
                Some(m) if m.is_dir() => Ok(()),
                _ => fail("a directory"),
            }
        }
        t @ ("FileOrCreate" | "File") => {
            if t == "FileOrCreate" && meta().is_none() {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o644)
                    .open(p)
                    .map_err(|e| format!("open {path}: {e}"))?;
            }
            match meta() {
                Some(m) if m.is_file() => Ok(()),
                _ => fail("a file"),
            }
        }
        "Socket" => match meta() {
            Some(m) if m.file_type().is_socket() => Ok(()),
            _ => fail("a socket file"),
        },
        "CharDevice" => match meta() {
            Some(m) if m.file_type().is_char_device() => Ok(()),
            _ => fail("a character device"),
        },
        "BlockDevice" => match meta() {
            Some(m) if m.file_type().is_block_device() => Ok(()),
            _ => fail("a block device"),
        },
        other => Err(format!("{other} is an invalid volume type")),
    }
}

#[cfg(test)]
mod tests;
