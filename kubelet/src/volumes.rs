//! STUB (being written): pod volumes under `<root-dir>/pods/<uid>/volumes`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Pod;

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

pub struct VolumeManager {
    _client: kube::Client,
    _root_dir: PathBuf,
}

impl VolumeManager {
    pub fn new(client: kube::Client, root_dir: PathBuf) -> Self {
        VolumeManager {
            _client: client,
            _root_dir: root_dir,
        }
    }
    /// Set up (or refresh: configMap/secret/projected contents are updated in place) every
    /// volume of the pod; returns them by volume name.
    pub async fn mount_pod(&self, _pod: &Pod) -> Result<HashMap<String, HostVolume>, VolumeError> {
        todo!()
    }
    /// Tear down the pod's volumes and remove its directory.
    pub async fn unmount_pod(&self, _uid: &str) -> std::io::Result<()> {
        todo!()
    }
    /// Remove volume directories of pods that are gone.
    pub async fn cleanup_orphans(&self, _live: &HashSet<String>) {
        todo!()
    }
}
