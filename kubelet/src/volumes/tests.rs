//! VolumeManager against a tempdir root and a [`MemorySource`]. Tests that mount tmpfs run
//! their mount assertions only when the process may mount (root).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, ConfigMapVolumeSource, Container, DownwardAPIProjection,
    DownwardAPIVolumeSource, HostPathVolumeSource, ObjectFieldSelector, ObjectReference,
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimStatus, PersistentVolumeClaimVolumeSource, PersistentVolumeSpec,
    PodSecurityContext, PodSpec, ResourceFieldSelector, ResourceRequirements, SecretVolumeSource,
    ServiceAccount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;

use super::*;

fn meta(ns: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        uid: Some(format!("uid-{name}")),
        ..Default::default()
    }
}

fn pod(uid: &str, volumes: Vec<Volume>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some("default".into()),
            name: Some("web".into()),
            uid: Some(uid.into()),
            labels: Some(BTreeMap::from([("app".into(), "web".into())])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    limits: Some(BTreeMap::from([("memory".into(), Quantity("32Mi".into()))])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            volumes: Some(volumes),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn vol(name: &str) -> Volume {
    Volume {
        name: name.into(),
        ..Default::default()
    }
}

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: meta("default", name),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn secret(name: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: meta("default", name),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

struct Env {
    dir: tempfile::TempDir,
    source: Arc<MemorySource>,
    vm: VolumeManager,
}

/// `tmpfs`: mount tmpfs volumes (only honoured when root).
fn env(tmpfs: bool) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let source = Arc::new(MemorySource::new());
    let vm = VolumeManager::with_source(source.clone(), dir.path().to_path_buf())
        .with_tmpfs(tmpfs && can_mount());
    Env { dir, source, vm }
}

fn can_mount() -> bool {
    mount::is_root() && Path::new("/proc/self/mountinfo").exists()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

impl Drop for Env {
    fn drop(&mut self) {
        // Never leave tmpfs mounts behind in the tempdir.
        if let Ok(ms) = mount::mounts() {
            let root = std::fs::canonicalize(self.dir.path()).unwrap_or_default();
            for m in mount::mounts_under(&ms, &root) {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&m)
                    .status();
            }
        }
    }
}

#[tokio::test]
async fn empty_dir_is_a_world_writable_directory_set_up_once() {
    let e = env(false);
    let mut v = vol("cache");
    v.empty_dir = Some(Default::default());
    let p = pod("u1", vec![v]);
    let vols = e.vm.mount_pod(&p).await.unwrap();
    let hv = &vols["cache"];
    assert_eq!(
        hv.host_path,
        e.dir
            .path()
            .join("pods/u1/volumes/kubernetes.io~empty-dir/cache")
    );
    assert!(!hv.read_only);
    assert_eq!(mode(&hv.host_path), 0o777);
    std::fs::write(hv.host_path.join("f"), "x").unwrap();
    assert_eq!(e.vm.mount_pod(&p).await.unwrap(), vols);
    assert!(hv.host_path.join("f").exists(), "contents survive resync");
}

#[tokio::test]
async fn memory_empty_dir_is_a_sized_tmpfs_and_unmounted_on_teardown() {
    if !can_mount() {
        eprintln!("skipped: not root");
        return;
    }
    let e = env(true);
    let mut v = vol("mem");
    v.empty_dir = Some(EmptyDirVolumeSource {
        medium: Some("Memory".into()),
        size_limit: Some(Quantity("1Mi".into())),
        ..Default::default()
    });
    let p = pod("u1", vec![v]);
    let hv = e.vm.mount_pod(&p).await.unwrap()["mem"].clone();
    let canon = std::fs::canonicalize(&hv.host_path).unwrap();
    let m = mount::mounts().unwrap();
    let entry = m.iter().find(|m| m.mount_point == canon).expect("mounted");
    assert_eq!(entry.fs_type, "tmpfs");
    // A second sync (and a restarted kubelet) must not stack another mount.
    let fresh = VolumeManager::with_source(e.source.clone(), e.dir.path().to_path_buf());
    fresh.mount_pod(&p).await.unwrap();
    let n = mount::mounts()
        .unwrap()
        .iter()
        .filter(|m| m.mount_point == canon)
        .count();
    assert_eq!(n, 1);

    e.vm.unmount_pod("u1").await.unwrap();
    assert!(mount::mounts_under(&mount::mounts().unwrap(), &canon).is_empty());
    assert!(!e.dir.path().join("pods/u1").exists());
}

#[tokio::test]
async fn host_path_types_checked_and_created_as_upstream() {
    let d = tempfile::tempdir().unwrap();
    let p = |s: &str| d.path().join(s).to_string_lossy().into_owned();
    std::fs::write(d.path().join("file"), "").unwrap();
    let sock_path = d.path().join("sock");
    let _sock = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();

    check_host_path(&p("newdir/sub"), Some("DirectoryOrCreate")).unwrap();
    assert!(d.path().join("newdir/sub").is_dir());
    check_host_path(&p("newfile"), Some("FileOrCreate")).unwrap();
    assert!(d.path().join("newfile").is_file());
    check_host_path(&p("file"), Some("File")).unwrap();
    check_host_path(&p("sock"), Some("Socket")).unwrap();
    check_host_path("/dev/null", Some("CharDevice")).unwrap();
    check_host_path(&p("missing"), None).unwrap();
    check_host_path(&p("missing"), Some("")).unwrap();

    for (path, ty, msg) in [
        (
            p("file"),
            "Directory",
            format!(
                "hostPath type check failed: {} is not a directory",
                p("file")
            ),
        ),
        (
            p("newdir"),
            "File",
            format!("hostPath type check failed: {} is not a file", p("newdir")),
        ),
        (
            p("file"),
            "Socket",
            format!(
                "hostPath type check failed: {} is not a socket file",
                p("file")
            ),
        ),
        (
            p("file"),
            "CharDevice",
            format!(
                "hostPath type check failed: {} is not a character device",
                p("file")
            ),
        ),
        (
            "/dev/null".to_string(),
            "BlockDevice",
            "hostPath type check failed: /dev/null is not a block device".to_string(),
        ),
        (
            p("file"),
            "Weird",
            "Weird is an invalid volume type".to_string(),
        ),
    ] {
        assert_eq!(check_host_path(&path, Some(ty)).unwrap_err(), msg);
    }
    assert!(
        check_host_path(&p("nodir/f"), Some("FileOrCreate")).is_err(),
        "no parent creation"
    );

    let e = env(false);
    let mut v = vol("h");
    v.host_path = Some(HostPathVolumeSource {
        path: p("file"),
        type_: Some("Directory".into()),
    });
    let err = e.vm.mount_pod(&pod("u1", vec![v])).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("MountVolume.SetUp failed for volume \"h\" : hostPath type check failed: {} is not a directory", p("file"))
    );
}

fn cm_volume(name: &str, cm: &str, items: Option<Vec<KeyToPath>>, optional: bool) -> Volume {
    let mut v = vol(name);
    v.config_map = Some(ConfigMapVolumeSource {
        name: cm.into(),
        items,
        optional: Some(optional),
        ..Default::default()
    });
    v
}

#[tokio::test]
async fn config_map_files_one_per_key_updated_in_place() {
    let e = env(false);
    e.source
        .put_config_map(config_map("cfg", &[("a.conf", "1"), ("b", "2")]));
    let p = pod("u1", vec![cm_volume("config", "cfg", None, false)]);
    let hv = e.vm.mount_pod(&p).await.unwrap()["config"].clone();
    assert!(hv.read_only);
    assert!(hv
        .host_path
        .ends_with("pods/u1/volumes/kubernetes.io~configmap/config"));
    assert_eq!(read(&hv.host_path.join("a.conf")), "1");
    assert_eq!(mode(&hv.host_path.join("b")), 0o644);
    let data1 = std::fs::read_link(hv.host_path.join("..data")).unwrap();

    // Unchanged: nothing written.
    e.vm.mount_pod(&p).await.unwrap();
    assert_eq!(
        std::fs::read_link(hv.host_path.join("..data")).unwrap(),
        data1
    );

    // Changed: swapped atomically, removed key gone.
    e.source
        .put_config_map(config_map("cfg", &[("a.conf", "3")]));
    e.vm.mount_pod(&p).await.unwrap();
    assert_ne!(
        std::fs::read_link(hv.host_path.join("..data")).unwrap(),
        data1
    );
    assert_eq!(read(&hv.host_path.join("a.conf")), "3");
    assert!(!hv.host_path.join("b").exists());
}

#[tokio::test]
async fn config_map_items_modes_and_binary_data() {
    let e = env(false);
    let mut cm = config_map("cfg", &[("k", "v")]);
    cm.binary_data = Some(BTreeMap::from([("bin".into(), ByteString(vec![0, 1, 2]))]));
    e.source.put_config_map(cm);
    let items = vec![
        KeyToPath {
            key: "k".into(),
            path: "dir/renamed".into(),
            mode: Some(0o400),
            user: None,
        },
        KeyToPath {
            key: "bin".into(),
            path: "bin".into(),
            mode: None,
            user: None,
        },
    ];
    let mut v = cm_volume("config", "cfg", Some(items), false);
    v.config_map.as_mut().unwrap().default_mode = Some(0o600);
    let hv = e.vm.mount_pod(&pod("u1", vec![v])).await.unwrap()["config"].clone();
    assert_eq!(read(&hv.host_path.join("dir/renamed")), "v");
    assert_eq!(mode(&hv.host_path.join("dir/renamed")), 0o400);
    assert_eq!(
        std::fs::read(hv.host_path.join("bin")).unwrap(),
        vec![0, 1, 2]
    );
    assert_eq!(mode(&hv.host_path.join("bin")), 0o600);
    assert!(!hv.host_path.join("k").exists());
}

#[tokio::test]
async fn config_map_errors_carry_upstream_messages() {
    let e = env(false);
    let err =
        e.vm.mount_pod(&pod("u1", vec![cm_volume("config", "nope", None, false)]))
            .await
            .unwrap_err();
    assert_eq!(err.volume, "config");
    assert_eq!(
        err.to_string(),
        "MountVolume.SetUp failed for volume \"config\" : configmap \"nope\" not found"
    );

    e.source.put_config_map(config_map("cfg", &[("a", "1")]));
    let items = vec![KeyToPath {
        key: "missing".into(),
        path: "m".into(),
        mode: None,
        user: None,
    }];
    let err =
        e.vm.mount_pod(&pod(
            "u2",
            vec![cm_volume("c", "cfg", Some(items.clone()), false)],
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.message,
        "configmap references non-existent config key: missing"
    );

    // Optional: a missing object or key is an empty volume.
    let ok =
        e.vm.mount_pod(&pod(
            "u3",
            vec![
                cm_volume("a", "nope", None, true),
                cm_volume("b", "cfg", Some(items), true),
            ],
        ))
        .await
        .unwrap();
    assert!(ok["a"].host_path.join("..data").exists());
}

#[tokio::test]
async fn refresh_failure_keeps_mounted_contents() {
    let e = env(false);
    e.source.put_config_map(config_map("cfg", &[("a", "1")]));
    let p = pod("u1", vec![cm_volume("config", "cfg", None, false)]);
    let hv = e.vm.mount_pod(&p).await.unwrap()["config"].clone();
    e.source.delete_config_map("default", "cfg");
    let again = e.vm.mount_pod(&p).await.unwrap();
    assert_eq!(again["config"], hv);
    assert_eq!(read(&hv.host_path.join("a")), "1");
}

#[tokio::test]
async fn secret_files_on_tmpfs_with_upstream_errors() {
    let e = env(true);
    e.source
        .put_secret(secret("creds", &[("password", "hunter2")]));
    let mut v = vol("s");
    v.secret = Some(SecretVolumeSource {
        secret_name: Some("creds".into()),
        default_mode: Some(0o400),
        ..Default::default()
    });
    let hv = e.vm.mount_pod(&pod("u1", vec![v.clone()])).await.unwrap()["s"].clone();
    assert!(hv.host_path.ends_with("kubernetes.io~secret/s"));
    assert_eq!(read(&hv.host_path.join("password")), "hunter2");
    assert_eq!(mode(&hv.host_path.join("password")), 0o400);
    if can_mount() {
        let canon = std::fs::canonicalize(&hv.host_path).unwrap();
        let ms = mount::mounts().unwrap();
        let m = ms.iter().find(|m| m.mount_point == canon).expect("tmpfs");
        assert_eq!(m.fs_type, "tmpfs");
        e.vm.unmount_pod("u1").await.unwrap();
        assert!(!e.dir.path().join("pods/u1").exists());
    }

    v.secret.as_mut().unwrap().secret_name = Some("gone".into());
    let err =
        e.vm.mount_pod(&pod("u2", vec![v.clone()]))
            .await
            .unwrap_err();
    assert_eq!(err.message, "secret \"gone\" not found");
    v.secret.as_mut().unwrap().secret_name = Some("creds".into());
    v.secret.as_mut().unwrap().items = Some(vec![KeyToPath {
        key: "user".into(),
        path: "user".into(),
        mode: None,
        user: None,
    }]);
    let err = e.vm.mount_pod(&pod("u3", vec![v])).await.unwrap_err();
    assert_eq!(err.message, "references non-existent secret key: user");
}

#[tokio::test]
async fn downward_api_labels_and_resources() {
    let e = env(false);
    let mut v = vol("info");
    v.downward_api = Some(DownwardAPIVolumeSource {
        default_mode: None,
        default_user: None,
        items: Some(vec![
            DownwardAPIVolumeFile {
                path: "labels".into(),
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.labels".into(),
                    api_version: None,
                }),
                ..Default::default()
            },
            DownwardAPIVolumeFile {
                path: "mem".into(),
                resource_field_ref: Some(ResourceFieldSelector {
                    container_name: Some("c".into()),
                    resource: "limits.memory".into(),
                    divisor: Some(Quantity("1Mi".into())),
                }),
                mode: Some(0o444),
                ..Default::default()
            },
        ]),
    });
    let mut p = pod("u1", vec![v]);
    let hv = e.vm.mount_pod(&p).await.unwrap()["info"].clone();
    assert!(hv.host_path.ends_with("kubernetes.io~downward-api/info"));
    assert_eq!(read(&hv.host_path.join("labels")), "app=\"web\"");
    assert_eq!(read(&hv.host_path.join("mem")), "32");
    assert_eq!(mode(&hv.host_path.join("mem")), 0o444);

    // Labels change: the file follows.
    p.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("tier".into(), "front".into());
    e.vm.mount_pod(&p).await.unwrap();
    assert_eq!(
        read(&hv.host_path.join("labels")),
        "app=\"web\"\ntier=\"front\""
    );
}

fn kube_api_access() -> Volume {
    let mut v = vol("kube-api-access-abcde");
    v.projected = Some(ProjectedVolumeSource {
        default_mode: Some(0o644),
        default_user: None,
        sources: Some(vec![
            VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: None,
                    expiration_seconds: Some(3607),
                    path: "token".into(),
                    user: None,
                }),
                ..Default::default()
            },
            VolumeProjection {
                config_map: Some(ConfigMapProjection {
                    name: "kube-root-ca.crt".into(),
                    items: Some(vec![KeyToPath {
                        key: "ca.crt".into(),
                        path: "ca.crt".into(),
                        mode: None,
                        user: None,
                    }]),
                    optional: None,
                }),
                ..Default::default()
            },
            VolumeProjection {
                downward_api: Some(DownwardAPIProjection {
                    items: Some(vec![DownwardAPIVolumeFile {
                        path: "namespace".into(),
                        field_ref: Some(ObjectFieldSelector {
                            api_version: Some("v1".into()),
                            field_path: "metadata.namespace".into(),
                        }),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            },
        ]),
    });
    v
}

fn sa(name: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: meta("default", name),
        ..Default::default()
    }
}

#[tokio::test]
async fn kube_api_access_projects_token_ca_and_namespace() {
    let e = env(true);
    e.source.put_service_account(sa("default"));
    e.source
        .put_config_map(config_map("kube-root-ca.crt", &[("ca.crt", "PEM")]));
    let p = pod("u1", vec![kube_api_access()]);
    let hv = e.vm.mount_pod(&p).await.unwrap()["kube-api-access-abcde"].clone();
    assert!(hv.read_only);
    assert!(hv
        .host_path
        .ends_with("kubernetes.io~projected/kube-api-access-abcde"));
    assert_eq!(read(&hv.host_path.join("token")), "token-default-1");
    assert_eq!(read(&hv.host_path.join("ca.crt")), "PEM");
    assert_eq!(read(&hv.host_path.join("namespace")), "default");
    // The token is cached until 80% of its lifetime: syncs do not mint new ones.
    let data1 = std::fs::read_link(hv.host_path.join("..data")).unwrap();
    e.vm.mount_pod(&p).await.unwrap();
    e.vm.mount_pod(&p).await.unwrap();
    assert_eq!(e.source.tokens_issued(), 1);
    assert_eq!(
        std::fs::read_link(hv.host_path.join("..data")).unwrap(),
        data1
    );
    // A pod without its CA configMap fails as upstream.
    let e2 = env(false);
    e2.source.put_service_account(sa("default"));
    let err = e2.vm.mount_pod(&p).await.unwrap_err();
    assert_eq!(err.message, "configmap \"kube-root-ca.crt\" not found");
}

#[tokio::test]
async fn token_falls_back_to_legacy_secret_then_empty() {
    let e = env(false);
    e.source.disable_token_api();
    e.source.put_service_account(sa("default"));
    e.source
        .put_config_map(config_map("kube-root-ca.crt", &[("ca.crt", "PEM")]));
    let p = pod("u1", vec![kube_api_access()]);
    let hv = e.vm.mount_pod(&p).await.unwrap()["kube-api-access-abcde"].clone();
    assert_eq!(read(&hv.host_path.join("token")), "");

    let e = env(false);
    e.source.disable_token_api();
    e.source.put_service_account(sa("default"));
    e.source
        .put_config_map(config_map("kube-root-ca.crt", &[("ca.crt", "PEM")]));
    let mut s = secret("default-token-x", &[("token", "legacy")]);
    s.type_ = Some("kubernetes.io/service-account-token".into());
    s.metadata.annotations = Some(BTreeMap::from([(
        "kubernetes.io/service-account.name".into(),
        "default".into(),
    )]));
    e.source.put_secret(s);
    let hv = e.vm.mount_pod(&p).await.unwrap()["kube-api-access-abcde"].clone();
    assert_eq!(read(&hv.host_path.join("token")), "legacy");

    // A missing service account is an error either way.
    let e = env(false);
    e.source
        .put_config_map(config_map("kube-root-ca.crt", &[("ca.crt", "PEM")]));
    let err = e.vm.mount_pod(&p).await.unwrap_err();
    assert_eq!(
        err.message,
        "failed to fetch token: serviceaccounts \"default\" not found"
    );
}

#[tokio::test]
async fn fs_group_owns_projected_files_and_narrows_token_mode() {
    if !mount::is_root() {
        eprintln!("skipped: chown needs root");
        return;
    }
    let e = env(false);
    e.source.put_service_account(sa("default"));
    e.source
        .put_config_map(config_map("kube-root-ca.crt", &[("ca.crt", "PEM")]));
    let mut p = pod("u1", vec![kube_api_access()]);
    p.spec.as_mut().unwrap().security_context = Some(PodSecurityContext {
        fs_group: Some(2000),
        ..Default::default()
    });
    let hv = e.vm.mount_pod(&p).await.unwrap()["kube-api-access-abcde"].clone();
    let token = hv.host_path.join("token");
    assert_eq!(std::fs::metadata(&token).unwrap().gid(), 2000);
    assert_eq!(mode(&token), 0o640);
    assert_eq!(mode(&hv.host_path.join("ca.crt")), 0o644);
    // A restarted kubelet finds ownership-widened modes unchanged: nothing rewritten.
    let mut cm = cm_volume("config", "kube-root-ca.crt", None, false);
    cm.config_map.as_mut().unwrap().default_mode = Some(0o600);
    let mut p2 = pod("u2", vec![cm]);
    p2.spec.as_mut().unwrap().security_context = p.spec.as_ref().unwrap().security_context.clone();
    let dir = e.vm.mount_pod(&p2).await.unwrap()["config"]
        .host_path
        .clone();
    assert_eq!(mode(&dir.join("ca.crt")), 0o640);
    let data1 = std::fs::read_link(dir.join("..data")).unwrap();
    let fresh = VolumeManager::with_source(e.source.clone(), e.dir.path().to_path_buf());
    fresh.mount_pod(&p2).await.unwrap();
    assert_eq!(std::fs::read_link(dir.join("..data")).unwrap(), data1);
}

fn claim(name: &str, bound_to: Option<&str>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: meta("default", name),
        spec: Some(PersistentVolumeClaimSpec {
            volume_name: bound_to.map(str::to_string),
            ..Default::default()
        }),
        status: Some(PersistentVolumeClaimStatus {
            phase: Some(
                if bound_to.is_some() {
                    "Bound"
                } else {
                    "Pending"
                }
                .into(),
            ),
            ..Default::default()
        }),
    }
}

#[tokio::test]
async fn claims_resolve_to_bound_host_path_volumes() {
    let e = env(false);
    let data = tempfile::tempdir().unwrap();
    e.source.put_claim(claim("data", Some("pv1")));
    e.source.put_claim(claim("pending", None));
    e.source.put_volume(PersistentVolume {
        metadata: ObjectMeta {
            name: Some("pv1".into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            host_path: Some(HostPathVolumeSource {
                path: data.path().to_string_lossy().into_owned(),
                type_: Some("Directory".into()),
            }),
            claim_ref: Some(ObjectReference {
                uid: Some("uid-data".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pvc_vol = |name: &str, claim: &str| {
        let mut v = vol(name);
        v.persistent_volume_claim = Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.into(),
            read_only: Some(true),
        });
        v
    };
    let vols =
        e.vm.mount_pod(&pod("u1", vec![pvc_vol("d", "data")]))
            .await
            .unwrap();
    assert_eq!(
        vols["d"],
        HostVolume {
            host_path: data.path().to_path_buf(),
            read_only: true
        }
    );
    let err =
        e.vm.mount_pod(&pod("u2", vec![pvc_vol("p", "pending")]))
            .await
            .unwrap_err();
    assert_eq!(
        err.message,
        "error processing PVC default/pending: PVC is not bound"
    );
    let err =
        e.vm.mount_pod(&pod("u3", vec![pvc_vol("m", "missing")]))
            .await
            .unwrap_err();
    assert!(
        err.message
            .contains("persistentvolumeclaims \"missing\" not found"),
        "{err}"
    );
}

#[tokio::test]
async fn one_bad_volume_does_not_stop_the_others() {
    let e = env(false);
    let mut ok = vol("ok");
    ok.empty_dir = Some(Default::default());
    let p = pod("u1", vec![cm_volume("bad", "nope", None, false), ok]);
    let err = e.vm.mount_pod(&p).await.unwrap_err();
    assert_eq!(err.volume, "bad");
    assert!(e
        .dir
        .path()
        .join("pods/u1/volumes/kubernetes.io~empty-dir/ok")
        .is_dir());
}

#[tokio::test]
async fn cleanup_orphans_removes_only_dead_pods() {
    let e = env(true);
    e.source.put_secret(secret("creds", &[("k", "v")]));
    let mut v = vol("s");
    v.secret = Some(SecretVolumeSource {
        secret_name: Some("creds".into()),
        ..Default::default()
    });
    e.vm.mount_pod(&pod("dead", vec![v.clone()])).await.unwrap();
    e.vm.mount_pod(&pod("live", vec![v])).await.unwrap();
    e.vm.cleanup_orphans(&HashSet::from(["live".to_string()]))
        .await;
    assert!(!e.dir.path().join("pods/dead").exists());
    assert!(e.dir.path().join("pods/live/volumes").is_dir());
    let root = std::fs::canonicalize(e.dir.path()).unwrap();
    let left = mount::mounts_under(&mount::mounts().unwrap(), &root.join("pods/dead"));
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn unmount_of_unknown_pod_is_ok_and_bad_uids_are_refused() {
    let e = env(false);
    e.vm.unmount_pod("never-seen").await.unwrap();
    assert!(e.vm.unmount_pod("..").await.is_err());
    assert!(e.vm.unmount_pod("a/b").await.is_err());
}
