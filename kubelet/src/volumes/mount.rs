//! Mount points: reading `/proc/self/mountinfo`, and tmpfs mounts made and removed with the
//! `mount`/`umount` programs (the kubelet forbids unsafe code, so no mount(2) calls).

use std::path::{Path, PathBuf};

/// One line of mountinfo, the fields the kubelet needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fs_type: String,
}

/// Parse mountinfo text (`36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw`).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let mount_point = fields.nth(4)?;
            let fs_type = fields.skip_while(|f| *f != "-").nth(1)?;
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(mount_point)),
                fs_type: fs_type.to_string(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(oct, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Current mounts of this process's mount namespace.
pub fn mounts() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// Mount points at or below `dir`, deepest first (the order to unmount them).
pub fn mounts_under(all: &[MountEntry], dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = all
        .iter()
        .filter(|m| m.mount_point.starts_with(dir))
        .map(|m| m.mount_point.clone())
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    v
}

/// `dir` is a mount point.
pub fn is_mount_point(dir: &Path) -> bool {
    mounts().is_ok_and(|ms| ms.iter().any(|m| m.mount_point == dir))
}

/// The process runs with effective uid 0 (needed to mount).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Mount a tmpfs on `dir`, `size` bytes at most (kernel default when `None`).
pub async fn mount_tmpfs(dir: &Path, size: Option<i64>) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("mount");
    cmd.args(["-t", "tmpfs"]);
    if let Some(size) = size.filter(|s| *s > 0) {
        cmd.arg("-o").arg(format!("size={size}"));
    }
    cmd.arg("tmpfs").arg(dir);
    run(cmd, "mount").await
}

/// Unmount `dir`; a busy mount is detached lazily so teardown never wedges.
pub async fn unmount(dir: &Path) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new("umount");
    cmd.arg(dir);
    match run(cmd, "umount").await {
        Ok(()) => Ok(()),
        Err(e) => {
            let mut lazy = tokio::process::Command::new("umount");
            lazy.arg("-l").arg(dir);
            run(lazy, "umount").await.map_err(|e2| format!("{e}; {e2}"))
        }
    }
}

async fn run(mut cmd: tokio::process::Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}\nOutput: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_with_optional_fields_and_escapes() {
        let text = "\
36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
100 36 0:50 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/my\\040secret rw,relatime - tmpfs tmpfs rw,size=1024k
101 36 0:51 / /var/lib/kubelet/pods/u1/volumes/kubernetes.io~empty-dir/cache rw - tmpfs tmpfs rw
";
        let ms = parse_mountinfo(text);
        assert_eq!(ms.len(), 3);
        assert_eq!(ms[0].fs_type, "ext3");
        assert_eq!(
            ms[1].mount_point,
            Path::new("/var/lib/kubelet/pods/u1/volumes/kubernetes.io~secret/my secret")
        );
        let under = mounts_under(&ms, Path::new("/var/lib/kubelet/pods/u1"));
        assert_eq!(under.len(), 2);
        assert!(mounts_under(&ms, Path::new("/var/lib/kubelet/pods/u2")).is_empty());
    }

    #[test]
    fn mounts_under_lists_deepest_first() {
        let ms = vec![
            MountEntry {
                mount_point: "/p/a".into(),
                fs_type: "tmpfs".into(),
            },
            MountEntry {
                mount_point: "/p/a/b/c".into(),
                fs_type: "tmpfs".into(),
            },
            MountEntry {
                mount_point: "/pother".into(),
                fs_type: "tmpfs".into(),
            },
        ];
        assert_eq!(
            mounts_under(&ms, Path::new("/p")),
            vec![PathBuf::from("/p/a/b/c"), PathBuf::from("/p/a")]
        );
    }
}
