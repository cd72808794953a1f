//! Upstream's AtomicWriter: the on-disk layout of configMap, secret, downwardAPI and projected
//! volumes, so containers see a whole new set of files at once when the source object changes.
//!
//! ```text
//! <volume>/..2024_05_01_10_00_00.123456789/   the payload, written in full before it is used
//! <volume>/..data -> ..2024_05_01_10_00_00.123456789
//! <volume>/key    -> ..data/key               one symlink per top-level path of the payload
//! ```
//! A write fills a new timestamped directory, points `..data_tmp` at it and renames that over
//! `..data` (the atomic step), then fixes the per-key symlinks and removes the old directory.
//! A payload equal to what is on disk writes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU64, Ordering};

const DATA_DIR: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// One file of a payload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileProjection {
    pub data: Vec<u8>,
    /// Permission bits (`0o644`).
    pub mode: u32,
}

/// Relative path → file.
pub type Payload = BTreeMap<String, FileProjection>;

/// Upstream's `validatePath`: relative, no `..` element, not starting with `..`.
pub fn validate_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err(format!("invalid path: must not be empty: {p:?}"));
    }
    if p.starts_with('/') {
        return Err(format!("invalid path: must be relative path: {p}"));
    }
    if p.len() > 4096 {
        return Err("invalid path: must be less than or equal to 4096 characters".into());
    }
    let items: Vec<&str> = p.split('/').collect();
    if items.contains(&"..") {
        return Err(format!("invalid path: must not contain '..': {p}"));
    }
    if items[0].starts_with("..") && items[0].len() > 2 {
        return Err(format!("invalid path: must not start with '..': {p}"));
    }
    Ok(())
}

/// Go's `path.Clean` for the relative paths a payload can hold.
fn clean(p: &str) -> String {
    let parts: Vec<&str> = Path::new(p)
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    parts.join("/")
}

fn top_level(p: &str) -> &str {
    p.split('/').next().unwrap_or(p)
}

/// Write `payload` into `target_dir` (which must exist). Returns whether anything changed on
/// disk. `fs_group`: files and directories are given that group, as upstream's
/// `SetVolumeOwnership` does for read-only volumes.
pub fn write(target_dir: &Path, payload: &Payload, fs_group: Option<u32>) -> io::Result<bool> {
    let mut clean_payload = Payload::new();
    for (p, f) in payload {
        validate_path(p).map_err(io::Error::other)?;
        clean_payload.insert(clean(p), f.clone());
    }
    let payload = clean_payload;

    let data_link = target_dir.join(DATA_DIR);
    let old_ts = std::fs::read_link(&data_link)
        .ok()
        .and_then(|t| t.to_str().map(str::to_string))
        .filter(|t| t.starts_with("..") && !t.contains('/'));
    let old_ts_dir = old_ts.as_ref().map(|t| target_dir.join(t));

    // User-visible names the old payload had that the new one does not.
    let new_top: BTreeSet<&str> = payload.keys().map(|p| top_level(p)).collect();
    let mut stale_top = BTreeSet::new();
    if let Some(dir) = &old_ts_dir {
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if let Some(n) = e.file_name().to_str() {
                    if !new_top.contains(n) {
                        stale_top.insert(n.to_string());
                    }
                }
            }
        }
    }

    let extra = if fs_group.is_some() { 0o440 } else { 0 };
    let needs_write = match &old_ts_dir {
        None => true,
        Some(dir) => {
            !stale_top.is_empty()
                || payload.iter().any(|(p, f)| differs(&dir.join(p), f, extra))
                || has_stale_nested(dir, &payload)
        }
    };
    if !needs_write {
        create_user_visible(target_dir, &new_top)?;
        return Ok(false);
    }

    let ts_dir = new_ts_dir(target_dir)?;
    let ts_name = ts_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    if let Err(e) = write_payload(&ts_dir, &payload, fs_group) {
        let _ = std::fs::remove_dir_all(&ts_dir);
        return Err(e);
    }

    let tmp_link = target_dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp_link);
    symlink(&ts_name, &tmp_link)?;
    std::fs::rename(&tmp_link, &data_link)?;

    create_user_visible(target_dir, &new_top)?;
    for name in &stale_top {
        let p = target_dir.join(name);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(&p)?;
        }
    }
    if let Some(dir) = old_ts_dir {
        if old_ts.as_deref() != Some(ts_name.as_str()) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
    if let Some(gid) = fs_group {
        std::os::unix::fs::lchown(target_dir, None, Some(gid))?;
    }
    Ok(true)
}

/// The file at `path` is missing or has other content or mode (`extra`: bits ownership adds).
fn differs(path: &Path, f: &FileProjection, extra: u32) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return true;
    };
    if !meta.is_file() || meta.permissions().mode() & 0o7777 != (f.mode | extra) & 0o7777 {
        return true;
    }
    std::fs::read(path).map_or(true, |d| d != f.data)
}

/// The old directory holds a nested file the new payload lacks (same top level name).
fn has_stale_nested(dir: &Path, payload: &Payload) -> bool {
    let mut old = Vec::new();
    collect_files(dir, dir, &mut old);
    old.iter().any(|p| !payload.contains_key(p))
}

fn collect_files(base: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            collect_files(base, &p, out);
        } else if let Ok(rel) = p.strip_prefix(base) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}

fn new_ts_dir(target_dir: &Path) -> io::Result<std::path::PathBuf> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let now = chrono::Utc::now();
    loop {
        let n = now.timestamp_subsec_nanos() as u64 + SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}{n}", now.format("..%Y_%m_%d_%H_%M_%S."));
        let p = target_dir.join(name);
        match std::fs::create_dir(&p) {
            Ok(()) => {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
                return Ok(p);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

fn write_payload(ts_dir: &Path, payload: &Payload, fs_group: Option<u32>) -> io::Result<()> {
    for (p, f) in payload {
        let path = ts_dir.join(p);
        if let Some(parent) = path.parent() {
            if parent != ts_dir {
                std::fs::create_dir_all(parent)?;
            }
        }
        std::fs::write(&path, &f.data)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode & 0o7777))?;
    }
    if let Some(gid) = fs_group {
        set_ownership(ts_dir, gid, true)?;
    }
    Ok(())
}

/// Create the `name -> ..data/name` symlinks that are missing.
fn create_user_visible(target_dir: &Path, names: &BTreeSet<&str>) -> io::Result<()> {
    for name in names {
        let link = target_dir.join(name);
        let want = Path::new(DATA_DIR).join(name);
        match std::fs::read_link(&link) {
            Ok(t) if t == want => {}
            Ok(_) => {
                std::fs::remove_file(&link)?;
                symlink(&want, &link)?;
            }
            Err(_) => symlink(&want, &link)?,
        }
    }
    Ok(())
}

/// Upstream's `SetVolumeOwnership`: group `gid` on everything below `dir`, group read (and
/// write unless `read_only`) on files and directories, setgid and group search on directories.
pub fn set_ownership(dir: &Path, gid: u32, read_only: bool) -> io::Result<()> {
    let mask = if read_only { 0o440 } else { 0o660 };
    fn walk(p: &Path, gid: u32, mask: u32) -> io::Result<()> {
        let meta = std::fs::symlink_metadata(p)?;
        std::os::unix::fs::lchown(p, None, Some(gid))?;
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let mode = meta.permissions().mode() & 0o7777;
        if meta.is_dir() {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | mask | 0o2110))?;
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), gid, mask)?;
            }
        } else {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode | mask))?;
        }
        Ok(())
    }
    walk(dir, gid, mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(items: &[(&str, &str, u32)]) -> Payload {
        items
            .iter()
            .map(|(p, d, m)| {
                (
                    p.to_string(),
                    FileProjection {
                        data: d.as_bytes().to_vec(),
                        mode: *m,
                    },
                )
            })
            .collect()
    }

    fn read(dir: &Path, p: &str) -> String {
        std::fs::read_to_string(dir.join(p)).unwrap()
    }

    #[test]
    fn validate_path_rejects_escapes_as_upstream() {
        for (p, ok) in [
            ("a", true),
            ("a/b", true),
            ("..a/b", false),
            ("../a", false),
            ("a/../b", false),
            ("/abs", false),
            ("", false),
            ("a..b", true),
        ] {
            assert_eq!(validate_path(p).is_ok(), ok, "{p}");
        }
    }

    #[test]
    fn first_write_creates_data_link_and_per_key_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let changed = write(
            d.path(),
            &payload(&[("a", "1", 0o644), ("sub/b", "2", 0o600)]),
            None,
        )
        .unwrap();
        assert!(changed);
        let ts = std::fs::read_link(d.path().join("..data")).unwrap();
        assert!(ts.to_str().unwrap().starts_with("..20"), "{ts:?}");
        assert_eq!(
            std::fs::read_link(d.path().join("a")).unwrap(),
            Path::new("..data/a")
        );
        assert_eq!(
            std::fs::read_link(d.path().join("sub")).unwrap(),
            Path::new("..data/sub")
        );
        assert_eq!(read(d.path(), "a"), "1");
        assert_eq!(read(d.path(), "sub/b"), "2");
        let mode = std::fs::metadata(d.path().join("sub/b"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn unchanged_payload_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let p = payload(&[("a", "1", 0o644)]);
        assert!(write(d.path(), &p, None).unwrap());
        let ts = std::fs::read_link(d.path().join("..data")).unwrap();
        assert!(!write(d.path(), &p, None).unwrap());
        assert_eq!(std::fs::read_link(d.path().join("..data")).unwrap(), ts);
    }

    #[test]
    fn update_swaps_data_dir_and_removes_old_keys() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            &payload(&[("a", "1", 0o644), ("b", "x", 0o644)]),
            None,
        )
        .unwrap();
        let old = std::fs::read_link(d.path().join("..data")).unwrap();
        assert!(write(
            d.path(),
            &payload(&[("a", "2", 0o644), ("c", "y", 0o644)]),
            None
        )
        .unwrap());
        let new = std::fs::read_link(d.path().join("..data")).unwrap();
        assert_ne!(old, new);
        assert!(!d.path().join(&old).exists(), "old timestamp dir removed");
        assert_eq!(read(d.path(), "a"), "2");
        assert_eq!(read(d.path(), "c"), "y");
        assert!(std::fs::symlink_metadata(d.path().join("b")).is_err());
        let names: BTreeSet<String> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}"); // ..data, ts dir, a, c
    }

    #[test]
    fn mode_change_alone_rewrites() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), &payload(&[("a", "1", 0o644)]), None).unwrap();
        assert!(write(d.path(), &payload(&[("a", "1", 0o400)]), None).unwrap());
        let mode = std::fs::metadata(d.path().join("a"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
    }

    #[test]
    fn removed_nested_file_rewrites() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            &payload(&[("s/a", "1", 0o644), ("s/b", "2", 0o644)]),
            None,
        )
        .unwrap();
        assert!(write(d.path(), &payload(&[("s/a", "1", 0o644)]), None).unwrap());
        assert!(!d.path().join("s/b").exists());
    }

    #[test]
    fn empty_payload_leaves_only_data_link() {
        let d = tempfile::tempdir().unwrap();
        assert!(write(d.path(), &Payload::new(), None).unwrap());
        assert!(d.path().join("..data").exists());
    }
}
