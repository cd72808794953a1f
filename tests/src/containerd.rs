//! Private containerd instances for tests, and the air-gapped image bundle they load.
//!
//! [`ContainerdProcess::start`] runs the machine's containerd with everything of its own under
//! one directory: root (content, snapshots), state, the gRPC/ttrpc sockets (the CRI endpoint),
//! runc's state and the CNI config dir; configured as `shared/reference/cri-containerd.md`
//! found necessary here (cgroupfs, `restrict_oom_score_adj`, pod netns under the state dir, no
//! AppArmor or hugetlb). Dropping it removes every task and container it ran, stops it by PID,
//! stops leftover shims of this instance only, unmounts what is still mounted below its
//! directory and removes that directory. containerd runs under a stdin watchdog, so it also
//! stops when the test process dies without dropping it.
//!
//! [`image_bundle`] runs `deploy/images.sh` once per test process into a cache directory next to
//! the build's binaries (packaging the debug `demo-web` as kuard); the script keeps archives whose
//! inputs did not change, so later test processes get it in about a second.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};

/// The sandbox (pause) image the bundle provides and [`ContainerdProcess`] configures.
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.10";

/// The containerd namespace the CRI plugin (and so the kubelet) uses.
pub const K8S_NAMESPACE: &str = "k8s.io";

/// Settings of a [`ContainerdProcess`] that tests may want to change.
#[derive(Clone, Debug)]
pub struct ContainerdOptions {
    /// `sandbox_image` of the CRI plugin.
    pub sandbox_image: String,
    /// Address the CRI streaming server (exec/attach/port-forward) binds; its port is random.
    pub stream_server_address: String,
    /// Where the CNI plugin binaries are.
    pub cni_bin_dir: PathBuf,
}

impl Default for ContainerdOptions {
    fn default() -> Self {
        let cni_bin_dir = ["/usr/lib/cni", "/opt/cni/bin"]
            .into_iter()
            .map(PathBuf::from)
            .find(|d| d.join("bridge").exists())
            .unwrap_or_else(|| "/usr/lib/cni".into());
        Self {
            sandbox_image: SANDBOX_IMAGE.into(),
            stream_server_address: "127.0.0.1".into(),
            cni_bin_dir,
        }
    }
}

/// The containerd configuration (version 2) for an instance living in `dir`.
pub fn config_toml(dir: &Path, opts: &ContainerdOptions) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
oom_score = 0

[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
  level = "info"
[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{sandbox}"
    stream_server_address = "{stream}"
    stream_server_port = "0"
    enable_selinux = false
    # No AppArmor and no hugetlb cgroup on these kernels.
    disable_apparmor = true
    tolerate_missing_hugetlb_controller = true
    disable_hugetlb_controller = true
    # Pod netns files under this instance's state dir, not the shared /var/run/netns.
    netns_mounts_under_state_dir = true
    # root lacks CAP_SYS_RESOURCE here, so the sandbox's oom_score_adj -998 would fail.
    restrict_oom_score_adj = true
    max_container_log_line_size = 16384
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          # PID 1 is not systemd on these machines: cgroupfs paths.
          SystemdCgroup = false
          Root = "{d}/runc"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{cni}"
      conf_dir = "{d}/cni"
      max_conf_num = 1
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = ""
"#,
        sandbox = opts.sandbox_image,
        stream = opts.stream_server_address,
        cni = opts.cni_bin_dir.display(),
    )
}

/// A running private containerd; see the module docs. Stopped and cleaned up on drop.
pub struct ContainerdProcess {
    /// The instance's directory (removed on drop).
    pub dir: PathBuf,
    /// The gRPC socket: the CRI endpoint is `unix://` + this (see [`Self::endpoint`]).
    pub socket: PathBuf,
    /// containerd's own PID.
    pub pid: u32,
    /// containerd's `root` (content store, snapshots, metadata).
    pub root: PathBuf,
    /// containerd's `state` (shim bundles, CRI sandbox files, pod netns mounts).
    pub state: PathBuf,
    /// The CNI `conf_dir` the CRI plugin reads (empty at start).
    pub cni_conf_dir: PathBuf,
    /// containerd's stdout and stderr.
    pub log: PathBuf,
    watchdog: Option<Child>,
}

impl ContainerdProcess {
    /// Starts containerd in `dir` (created if missing; the instance owns it and removes it on
    /// drop) with [`ContainerdOptions::default`], and waits until it answers.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(dir, &ContainerdOptions::default())
    }

    /// [`Self::start`] with other options.
    pub fn start_with(dir: &Path, opts: &ContainerdOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        for sub in ["root", "state", "opt", "cni", "runc"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(&dir, opts))?;
        let log = dir.join("containerd.log");
        let pid_file = dir.join("containerd.pid");
        let logf = std::fs::File::create(&log)?;
        // The watchdog stops containerd when our end of its stdin closes, which also happens
        // when the test process dies without dropping us.
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(r#"exec 3<&0; containerd --config "$0" </dev/null & pid=$!; echo "$pid" >"$1"; (cat <&3 >/dev/null; kill "$pid" 2>/dev/null) & wait "$pid""#)
            .arg(&config)
            .arg(&pid_file)
            .stdin(Stdio::piped())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .context("starting containerd (is it installed? run deploy/setup.sh)")?;
        let mut me = Self {
            socket: dir.join("containerd.sock"),
            pid: 0,
            root: dir.join("root"),
            state: dir.join("state"),
            cni_conf_dir: dir.join("cni"),
            log,
            dir,
            watchdog: Some(watchdog),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if me.pid == 0 {
                if let Ok(s) = std::fs::read_to_string(&pid_file) {
                    me.pid = s.trim().parse().unwrap_or(0);
                }
            }
            if me.pid != 0 && me.socket.exists() && me.ctr_raw(&["version"])?.status.success() {
                return Ok(me);
            }
            if let Some(status) = me
                .watchdog
                .as_mut()
                .and_then(|w| w.try_wait().ok().flatten())
            {
                bail!(
                    "containerd exited ({status}) before answering: {}",
                    me.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!("containerd did not answer within 30s: {}", me.log_tail());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The CRI endpoint: `unix:///…/containerd.sock`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The last lines of containerd's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// `ctr -a SOCKET ARGS…` (no namespace flag), whatever its exit status.
    pub fn ctr_raw(&self, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("ctr")
            .arg("-a")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running ctr")
    }

    /// `ctr -a SOCKET -n k8s.io ARGS…`; its stdout, or an error with its stderr.
    pub fn ctr(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut full = vec!["-n", K8S_NAMESPACE];
        full.extend_from_slice(args);
        let out = self.ctr_raw(&full)?;
        ensure!(
            out.status.success(),
            "ctr {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A `Command` for `ctr -a SOCKET -n k8s.io ARGS…`, for callers that spawn it themselves
    /// (for example a foreground `run` whose exit status matters).
    pub fn ctr_command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a")
            .arg(&self.socket)
            .args(["-n", K8S_NAMESPACE])
            .args(args);
        c
    }

    /// Imports one image archive into the `k8s.io` namespace.
    pub fn import(&self, archive: &Path) -> anyhow::Result<()> {
        let path = archive.to_str().context("archive path is not UTF-8")?;
        self.ctr(&["images", "import", path])?;
        Ok(())
    }

    /// Imports every `*.oci.tar` in `dir` (as [`image_bundle`] makes it); returns the archives.
    pub fn import_dir(&self, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
        let mut archives: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.to_string_lossy().ends_with(".oci.tar"))
            .collect();
        archives.sort();
        ensure!(!archives.is_empty(), "no *.oci.tar in {}", dir.display());
        for a in &archives {
            self.import(a)?;
        }
        Ok(archives)
    }

    /// The image names in the `k8s.io` namespace (without the CRI plugin's `sha256:` refs).
    pub fn images(&self) -> anyhow::Result<Vec<String>> {
        Ok(self
            .ctr(&["images", "ls", "-q"])?
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with("sha256:"))
            .map(str::to_string)
            .collect())
    }

    /// Removes every task and container in every namespace (best effort).
    fn remove_all_containers(&self) {
        let Ok(out) = self.ctr_raw(&["namespaces", "ls", "-q"]) else {
            return;
        };
        for ns in String::from_utf8_lossy(&out.stdout).lines() {
            let list = |what: &str| -> Vec<String> {
                self.ctr_raw(&["-n", ns, what, "ls", "-q"])
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for task in list("tasks") {
                let _ = self.ctr_raw(&["-n", ns, "tasks", "delete", "--force", &task]);
            }
            for c in list("containers") {
                let _ = self.ctr_raw(&["-n", ns, "containers", "delete", &c]);
            }
        }
    }

    /// Shims started by this instance that are still alive (their `-address` is our socket).
    fn leftover_shims(&self) -> Vec<u32> {
        let sock = self.socket.to_string_lossy().into_owned();
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                    return false;
                };
                let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
                args.first()
                    .is_some_and(|a| String::from_utf8_lossy(a).contains("containerd-shim"))
                    && args
                        .windows(2)
                        .any(|w| w[0] == b"-address" && w[1] == sock.as_bytes())
            })
            .collect()
    }

    fn alive(pid: u32) -> bool {
        // A zombie has exited; only its parent's wait is missing.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    }

    /// Stops everything; also what `Drop` does.
    fn shutdown(&mut self) {
        let Some(mut watchdog) = self.watchdog.take() else {
            return;
        };
        self.remove_all_containers();
        // Closing the watchdog's stdin makes it SIGTERM containerd.
        drop(watchdog.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.pid != 0 && Self::alive(self.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.pid != 0 && Self::alive(self.pid) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.pid.to_string()])
                .status();
        }
        let _ = watchdog.kill();
        let _ = watchdog.wait();
        for pid in self.leftover_shims() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        for m in mounts_under(&self.dir) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&m)
                .stderr(Stdio::null())
                .status();
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                let _ = writeln!(
                    std::io::stderr(),
                    "containerd test dir {} not removed: {e}",
                    self.dir.display()
                );
            }
        }
    }
}

impl Drop for ContainerdProcess {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Mount points at or below `dir`, deepest first (from /proc/self/mountinfo).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount_path(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by(|a, b| b.cmp(a));
    out.dedup();
    out
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) if b[i] == b'\\' => {
                out.push(d.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The workspace root (where `deploy/` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `<target>/<profile>`, where cargo puts the workspace's binaries for this build: the test
/// binaries live in `<target>/<profile>/deps`, the benchmark binaries in `<target>/<profile>`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().expect("binary has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("<target>/<profile>/deps").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The `demo-web` binary packaged as kuard: `$DEMO_WEB_BIN`, else the one next to the test
/// binary (`<target>/debug/demo-web`, built by `cargo build --workspace --bins`, which
/// `deploy/test.sh` runs first).
pub fn demo_web_binary() -> PathBuf {
    std::env::var_os("DEMO_WEB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir().join("demo-web"))
}

/// Runs `deploy/images.sh OUT` with [`demo_web_binary`]; returns its stdout.
pub fn build_image_bundle(out: &Path) -> anyhow::Result<String> {
    let demo = demo_web_binary();
    ensure!(
        demo.is_file(),
        "{} is missing: run `cargo build -p demo-web` first",
        demo.display()
    );
    let script = workspace_root().join("deploy/images.sh");
    let result = Command::new("bash")
        .arg(&script)
        .arg(out)
        .env("DEMO_WEB_BIN", &demo)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(
        result.status.success(),
        "{} failed ({}): {}",
        script.display(),
        result.status,
        String::from_utf8_lossy(&result.stderr)
    );
    Ok(String::from_utf8_lossy(&result.stdout).into_owned())
}

/// The image bundle's directory (`*.oci.tar` plus `images.txt`), built at most once per test
/// process into `$KUBRS_TEST_IMAGES` or `<target>/<profile>/test-images`.
///
/// # Panics
/// If `deploy/images.sh` fails (missing packages: run `deploy/setup.sh`; missing demo-web:
/// `cargo build -p demo-web`).
pub fn image_bundle() -> PathBuf {
    static BUNDLE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUNDLE
        .get_or_init(|| {
            let dir = std::env::var_os("KUBRS_TEST_IMAGES")
                .map(PathBuf::from)
                .unwrap_or_else(|| profile_dir().join("test-images"));
            build_image_bundle(&dir)
                .map(|_| dir)
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .unwrap_or_else(|e| panic!("building the image bundle: {e}"))
}

/// Every image name in a bundle directory (its `images.txt`).
pub fn bundle_images(bundle: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(bundle.join("images.txt"))
        .with_context(|| format!("reading {}/images.txt", bundle.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mount_path(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path(r"/x\134y"), r"/x\y");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
        assert_eq!(unescape_mount_path(r"/end\04"), r"/end\04");
    }

    #[test]
    fn config_keeps_every_path_inside_the_directory() {
        let cfg = config_toml(Path::new("/t/c1"), &ContainerdOptions::default());
        for line in cfg.lines() {
            let l = line.trim();
            if l.starts_with("root")
                || l.starts_with("state")
                || l.starts_with("address = \"/")
                || l.starts_with("conf_dir")
                || l.starts_with("Root")
                || l.starts_with("path")
            {
                assert!(l.contains("\"/t/c1/"), "{l}");
            }
        }
        assert!(cfg.contains("restrict_oom_score_adj = true"));
        assert!(cfg.contains("SystemdCgroup = false"));
        assert!(cfg.contains(&format!("sandbox_image = \"{SANDBOX_IMAGE}\"")));
    }
}
