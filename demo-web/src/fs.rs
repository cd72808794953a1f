//! `/fs/`: browse the container's filesystem, as kuard's file system browser does. Directories
//! are listed (HTML for browsers, one name per line otherwise, directories with a trailing `/`);
//! files are served as they are, up to [`MAX_FILE`] bytes.
//!
//! Paths are resolved under the configured root and may not contain `..`, so a request never
//! leaves that root by its path (symbolic links inside the root are followed, as a shell would).

use std::path::{Component, Path, PathBuf};

use tokio::io::AsyncReadExt;

/// Largest file (or prefix of a file) served in one response.
pub const MAX_FILE: u64 = 64 << 20;

/// A request path that points outside the root.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("path {0:?} leaves the served root")]
pub struct Escapes(pub String);

/// The file system path a URL path (after `/fs/`) names under `root`.
pub fn resolve(root: &Path, url_path: &str) -> Result<PathBuf, Escapes> {
    let mut out = root.to_path_buf();
    for c in Path::new(url_path).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(Escapes(url_path.into())),
        }
    }
    Ok(out)
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
}

/// The entries of `dir`, sorted by name. Symbolic links are described by their targets (a link
/// to a directory is a directory); dangling links show with size 0.
pub async fn list(dir: &Path) -> std::io::Result<Vec<Entry>> {
    let mut rd = tokio::fs::read_dir(dir).await?;
    let mut out = Vec::new();
    while let Some(e) = rd.next_entry().await? {
        let meta = match tokio::fs::metadata(e.path()).await {
            Ok(m) => Some(m),
            Err(_) => e.metadata().await.ok(),
        };
        out.push(Entry {
            name: e.file_name().to_string_lossy().into_owned(),
            is_dir: meta.as_ref().is_some_and(|m| m.is_dir()),
            size: meta.as_ref().map_or(0, |m| m.len()),
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// At most [`MAX_FILE`] bytes of a file. Files under /proc report size 0, so this reads rather
/// than trusting the length.
pub async fn read(path: &Path) -> std::io::Result<Vec<u8>> {
    let f = tokio::fs::File::open(path).await?;
    let mut buf = Vec::new();
    f.take(MAX_FILE).read_to_end(&mut buf).await?;
    Ok(buf)
}

/// The plain-text listing: one entry per line, directories with a trailing `/`.
pub fn render_text(entries: &[Entry]) -> String {
    entries
        .iter()
        .map(|e| format!("{}{}\n", e.name, if e.is_dir { "/" } else { "" }))
        .collect()
}

/// The HTML listing of `url_dir` (the request path, ending in `/`).
pub fn render_html(url_dir: &str, entries: &[Entry]) -> String {
    let mut s = format!(
        "<!DOCTYPE html>\n<html><head><title>{0}</title></head><body>\n<h1>{0}</h1>\n<pre>\n<a href=\"../\">../</a>\n",
        crate::html_escape(url_dir)
    );
    for e in entries {
        let name = format!("{}{}", e.name, if e.is_dir { "/" } else { "" });
        let n = crate::html_escape(&name);
        let size = if e.is_dir {
            "-".to_string()
        } else {
            e.size.to_string()
        };
        s.push_str(&format!("<a href=\"{n}\">{n}</a> {size}\n"));
    }
    s.push_str("</pre>\n</body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_under_the_root_only() {
        let root = Path::new("/srv");
        let cases = [
            ("", Ok("/srv")),
            ("etc/passwd", Ok("/srv/etc/passwd")),
            ("/etc/", Ok("/srv/etc")),
            ("./a/./b", Ok("/srv/a/b")),
            ("a/../b", Err(())),
            ("..", Err(())),
        ];
        for (url, want) in cases {
            assert_eq!(
                resolve(root, url).map_err(|_| ()),
                want.map(PathBuf::from),
                "{url:?}"
            );
        }
    }

    #[tokio::test]
    async fn listing_marks_directories_and_follows_links() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("file.txt"), "hello").unwrap();
        std::os::unix::fs::symlink("sub", d.path().join("link")).unwrap();
        std::os::unix::fs::symlink("missing", d.path().join("dangling")).unwrap();
        let entries = list(d.path()).await.unwrap();
        assert_eq!(render_text(&entries), "dangling\nfile.txt\nlink/\nsub/\n");
        let html = render_html("/fs/x/", &entries);
        assert!(
            html.contains("<a href=\"file.txt\">file.txt</a> 5"),
            "{html}"
        );
        assert!(html.contains("<a href=\"sub/\">sub/</a> -"), "{html}");
    }

    #[test]
    fn html_names_are_escaped() {
        let html = render_html(
            "/fs/",
            &[Entry {
                name: "<b>&".into(),
                is_dir: false,
                size: 1,
            }],
        );
        assert!(html.contains("&lt;b&gt;&amp;"), "{html}");
        assert!(!html.contains("<b>&"), "{html}");
    }
}
