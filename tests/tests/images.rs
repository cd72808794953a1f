//! The air-gapped image bundle (`deploy/images.sh`): reproducible archives, valid OCI images for
//! this machine named as the tutorials name them, and images that really run in containerd.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::containerd::{
    build_image_bundle, bundle_images, image_bundle, ContainerdProcess, SANDBOX_IMAGE,
};

const ARCHIVES: [&str; 6] = ["busybox", "curl", "kuard", "nginx", "pause", "redis"];

/// Every name the bundle must provide: the tutorials' names and tags (and busybox:1.28 and
/// nginx:1.7.9, common in the Kubernetes docs). `nginx:1.91` is absent on purpose: a tutorial
/// uses that typo to show ImagePullBackOff.
const EXPECTED: &[&str] = &[
    "registry.k8s.io/pause:3.10",
    "docker.io/library/busybox:latest",
    "docker.io/library/busybox:1.28",
    "gcr.io/kuar-demo/kuard-amd64:blue",
    "gcr.io/kuar-demo/kuard-amd64:green",
    "gcr.io/kuar-demo/kuard-amd64:purple",
    "docker.io/library/nginx:latest",
    "docker.io/library/nginx:1.7.9",
    "docker.io/library/nginx:1.9.1",
    "docker.io/library/nginx:1.10.0",
    "docker.io/library/nginx:1.11.5",
    "docker.io/library/nginx:1.14.2",
    "docker.io/library/redis:latest",
    "docker.io/library/redis:3.2.7-alpine",
    "docker.io/tutum/curl:latest",
    "docker.io/radial/busyboxplus:curl",
    "docker.io/curlimages/curl:latest",
];

fn expected_names() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = EXPECTED.iter().map(|s| s.to_string()).collect();
    let arch = oci_arch();
    if arch != "amd64" {
        for tag in ["blue", "green", "purple"] {
            names.insert(format!("gcr.io/kuar-demo/kuard-{arch}:{tag}"));
        }
    }
    names
}

/// This machine's architecture as OCI names it.
fn oci_arch() -> String {
    let out = std::process::Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .expect("dpkg");
    match String::from_utf8_lossy(&out.stdout).trim() {
        "armhf" => "arm".into(),
        "i386" => "386".into(),
        other => other.into(),
    }
}

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

#[test]
fn images_sh_is_reproducible_and_skips_up_to_date_archives() {
    let cached = image_bundle();
    let fresh = tempfile::tempdir().unwrap();
    let first = build_image_bundle(fresh.path()).unwrap();
    for name in ARCHIVES {
        assert!(
            first.contains(&format!("built {name}.oci.tar")),
            "{name} not built: {first}"
        );
        let a = std::fs::read(fresh.path().join(format!("{name}.oci.tar"))).unwrap();
        let b = std::fs::read(cached.join(format!("{name}.oci.tar"))).unwrap();
        assert!(
            a == b,
            "{name}.oci.tar differs between two builds from the same inputs"
        );
    }
    let before: Vec<_> = ARCHIVES
        .iter()
        .map(|n| mtime(&fresh.path().join(format!("{n}.oci.tar"))))
        .collect();
    let second = build_image_bundle(fresh.path()).unwrap();
    for (name, t) in ARCHIVES.iter().zip(before) {
        assert!(
            second.contains(&format!("{name}.oci.tar is up to date")),
            "{name} rebuilt: {second}"
        );
        assert_eq!(mtime(&fresh.path().join(format!("{name}.oci.tar"))), t);
    }
    let listed: BTreeSet<String> = bundle_images(fresh.path()).unwrap().into_iter().collect();
    assert_eq!(listed, expected_names());
}

fn sha256_of_files(dir: &Path) -> std::collections::HashMap<String, String> {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let out = std::process::Command::new("sha256sum")
        .args(&files)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (sum, path) = l.split_once("  ").unwrap();
            let name = Path::new(path).file_name().unwrap().to_string_lossy();
            (name.into_owned(), sum.to_string())
        })
        .collect()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// What the config of `name` must say, as the real image's does.
fn check_config(name: &str, c: &Value) {
    let env = strings(&c["Env"]);
    assert!(
        env.iter()
            .any(|e| e.starts_with("PATH=") && e.contains("/bin")),
        "{name}: {env:?}"
    );
    let (repo, tag) = name.rsplit_once(':').unwrap();
    let ports = |p: &str| assert!(c["ExposedPorts"].get(p).is_some(), "{name}: {c}");
    match repo {
        "registry.k8s.io/pause" => assert_eq!(strings(&c["Entrypoint"]), ["/pause"], "{c}"),
        "docker.io/library/busybox" => assert_eq!(strings(&c["Cmd"]), ["sh"], "{c}"),
        r if r.starts_with("gcr.io/kuar-demo/kuard-") => {
            assert_eq!(strings(&c["Cmd"]), ["/kuard"], "{c}");
            assert!(
                env.contains(&format!("KUARD_VERSION={tag}").as_str()),
                "{c}"
            );
            ports("8080/tcp");
        }
        "docker.io/library/nginx" => {
            assert_eq!(strings(&c["Cmd"]), ["nginx", "-g", "daemon off;"], "{c}");
            ports("80/tcp");
        }
        "docker.io/library/redis" => {
            assert_eq!(strings(&c["Cmd"]), ["redis-server"], "{c}");
            assert_eq!(c["WorkingDir"], "/data", "{c}");
            ports("6379/tcp");
        }
        "docker.io/tutum/curl" | "docker.io/radial/busyboxplus" => {
            assert_eq!(strings(&c["Cmd"]), ["/bin/sh"], "{c}")
        }
        "docker.io/curlimages/curl" => {
            assert_eq!(strings(&c["Entrypoint"]), ["/entrypoint.sh"], "{c}");
            assert_eq!(strings(&c["Cmd"]), ["curl"], "{c}");
        }
        other => panic!("unexpected image {other}"),
    }
}

#[test]
fn bundle_archives_are_valid_oci_layouts_for_this_machine() {
    let bundle = image_bundle();
    let arch = oci_arch();
    let mut names = BTreeSet::new();
    for archive in ARCHIVES {
        let d = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("tar")
            .arg("-xf")
            .arg(bundle.join(format!("{archive}.oci.tar")))
            .arg("-C")
            .arg(d.path())
            .status()
            .unwrap();
        assert!(status.success());
        let layout: Value =
            serde_json::from_slice(&std::fs::read(d.path().join("oci-layout")).unwrap()).unwrap();
        assert_eq!(layout["imageLayoutVersion"], "1.0.0");
        let blobs = d.path().join("blobs/sha256");
        let sums = sha256_of_files(&blobs);
        for (file, sum) in &sums {
            assert_eq!(file, sum, "{archive}: blob named by a wrong digest");
        }
        let blob = |desc: &Value| -> Vec<u8> {
            let digest = desc["digest"].as_str().unwrap();
            let hex = digest.strip_prefix("sha256:").unwrap();
            let bytes = std::fs::read(blobs.join(hex))
                .unwrap_or_else(|e| panic!("{archive}: blob {digest}: {e}"));
            assert_eq!(Some(bytes.len() as u64), desc["size"].as_u64(), "{digest}");
            bytes
        };
        let index: Value =
            serde_json::from_slice(&std::fs::read(d.path().join("index.json")).unwrap()).unwrap();
        for m in index["manifests"].as_array().unwrap() {
            let name = m["annotations"]["io.containerd.image.name"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(
                m["annotations"]["org.opencontainers.image.ref.name"],
                name.rsplit_once(':').unwrap().1
            );
            assert_eq!(m["platform"]["architecture"], arch.as_str(), "{name}");
            let manifest: Value = serde_json::from_slice(&blob(m)).unwrap();
            assert_eq!(manifest["schemaVersion"], 2);
            let config: Value = serde_json::from_slice(&blob(&manifest["config"])).unwrap();
            assert_eq!(config["architecture"], arch.as_str(), "{name}");
            assert_eq!(config["os"], "linux", "{name}");
            let layers = manifest["layers"].as_array().unwrap();
            assert_eq!(
                layers.len(),
                config["rootfs"]["diff_ids"].as_array().unwrap().len(),
                "{name}"
            );
            for l in layers {
                assert_eq!(
                    l["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip",
                    "{name}"
                );
                blob(l);
            }
            check_config(&name, &config["config"]);
            names.insert(name);
        }
    }
    assert_eq!(names, expected_names());
}

/// Runs containers from the imported images with `ctr`, each in its own network namespace.
struct Runner<'a> {
    ctd: &'a ContainerdProcess,
    prefix: String,
    execs: std::cell::Cell<u32>,
}

impl Runner<'_> {
    fn id(&self, name: &str) -> String {
        // Container ids name cgroups that other containerd instances on this machine share.
        format!("{}-{name}", self.prefix)
    }

    /// `ctr run --rm IMAGE ID ARGS…` in the foreground; its stdout.
    fn run(&self, image: &str, name: &str, args: &[&str]) -> String {
        let id = self.id(name);
        let mut full = vec!["run", "--rm", image, &id];
        full.extend_from_slice(args);
        self.ctd.ctr(&full).unwrap()
    }

    /// `ctr run -d IMAGE ID`.
    fn start(&self, image: &str, name: &str) {
        self.ctd.ctr(&["run", "-d", image, &self.id(name)]).unwrap();
    }

    /// `ctr task exec` in a running container: (success, stdout).
    fn exec(&self, name: &str, args: &[&str]) -> (bool, String) {
        let n = self.execs.get() + 1;
        self.execs.set(n);
        let exec_id = format!("e{n}");
        let id = self.id(name);
        let mut full = vec!["-n", "k8s.io", "task", "exec", "--exec-id", &exec_id, &id];
        full.extend_from_slice(args);
        let out = self.ctd.ctr_raw(&full).unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// Retries `exec` until it succeeds (a server in the container may still be starting).
    fn exec_eventually(&self, name: &str, args: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (ok, out) = self.exec(name, args);
            if ok {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {args:?} kept failing: {out}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_running(&self, name: &str) {
        let id = self.id(name);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.ctd.ctr(&["task", "ls"]).unwrap().lines().any(|l| {
            let mut f = l.split_whitespace();
            f.next() == Some(id.as_str()) && f.nth(1) == Some("RUNNING")
        }) {
            assert!(Instant::now() < deadline, "{id} never ran");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn sigterm(&self, name: &str) {
        self.ctd
            .ctr(&["task", "kill", "--signal", "SIGTERM", &self.id(name)])
            .unwrap();
    }
}

fn wait_child(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bundled_images_run_in_a_private_containerd() {
    let bundle = image_bundle();
    let tmp = tempfile::tempdir().unwrap();
    let ctd_dir = tmp.path().join("containerd");
    let ctd = ContainerdProcess::start(&ctd_dir).unwrap();
    assert!(ctd.endpoint().starts_with("unix:///"));
    assert!(ctd.pid > 0);
    let archives = ctd.import_dir(&bundle).unwrap();
    assert_eq!(archives.len(), ARCHIVES.len());
    let present: BTreeSet<String> = ctd.images().unwrap().into_iter().collect();
    for name in expected_names() {
        assert!(present.contains(&name), "{name} not imported: {present:?}");
    }

    let r = Runner {
        ctd: &ctd,
        prefix: format!("imgtest-{}", std::process::id()),
        execs: Default::default(),
    };

    // busybox: a shell with the applets, users and a world-writable /tmp.
    let out = r.run(
        "docker.io/library/busybox:latest",
        "busybox",
        &["sh", "-c", "echo hello; id -un; stat -c %a /tmp"],
    );
    assert_eq!(out, "hello\nroot\n1777\n");

    // curl: Debian's curl with its libraries resolved in a bare rootfs.
    let out = r.run(
        "docker.io/tutum/curl:latest",
        "curl",
        &["curl", "--version"],
    );
    assert!(out.starts_with("curl "), "{out}");
    let out = r.run(
        "docker.io/curlimages/curl:latest",
        "curlimages",
        &["/entrypoint.sh", "--version"],
    );
    assert!(out.starts_with("curl "), "{out}");

    // nginx: serves the default page on :80.
    r.start("docker.io/library/nginx:1.14.2", "nginx");
    let page = r.exec_eventually("nginx", &["wget", "-qO-", "http://127.0.0.1/"]);
    assert!(page.contains("Welcome to nginx!"), "{page}");
    let (ok, ps) = r.exec("nginx", &["ps"]);
    assert!(ok && ps.contains("nginx: worker process"), "{ps}");

    // redis: answers on 6379 with protected mode off.
    r.start("docker.io/library/redis:3.2.7-alpine", "redis");
    assert_eq!(r.exec_eventually("redis", &["redis-cli", "ping"]), "PONG\n");
    assert_eq!(
        r.exec_eventually("redis", &["redis-cli", "config", "get", "protected-mode"]),
        "protected-mode\nno\n"
    );

    // kuard: reports its tag, toggles liveness, stops with status 0 on SIGTERM.
    let mut kuard = ctd
        .ctr_command(&[
            "run",
            "--rm",
            "gcr.io/kuar-demo/kuard-amd64:purple",
            &r.id("kuard"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    r.wait_running("kuard");
    assert_eq!(
        r.exec_eventually("kuard", &["wget", "-qO-", "http://127.0.0.1:8080/version"]),
        "purple\n"
    );
    let url = |p: &str| format!("http://127.0.0.1:8080{p}");
    assert!(
        !r.exec("kuard", &["wget", "-qO-", &url("/healthy?fail=1")])
            .0
    );
    assert!(!r.exec("kuard", &["wget", "-qO-", &url("/healthy")]).0);
    assert!(r.exec("kuard", &["wget", "-qO-", &url("/healthy?ok=1")]).0);
    let (ok, served) = r.exec("kuard", &["wget", "-qO-", &url("/fs/etc/passwd")]);
    let (_, passwd) = r.exec("kuard", &["cat", "/etc/passwd"]);
    assert!(
        ok && served == passwd && served.starts_with("root:x:0:0:"),
        "{served}"
    );
    r.sigterm("kuard");
    let status = wait_child(&mut kuard, "kuard");
    let mut logs = String::new();
    std::io::Read::read_to_string(kuard.stdout.as_mut().unwrap(), &mut logs).unwrap();
    assert!(status.success(), "kuard exited with {status}: {logs}");
    assert!(logs.contains("shutting down"), "{logs}");

    // pause: exits 0 on SIGTERM (as PID 1, where an unhandled signal would be ignored).
    let mut pause = ctd
        .ctr_command(&["run", "--rm", SANDBOX_IMAGE, &r.id("pause")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    r.wait_running("pause");
    r.sigterm("pause");
    assert!(wait_child(&mut pause, "pause").success());

    // Dropping the instance removes the detached containers, stops containerd and its shims,
    // and leaves no mount and no directory behind.
    let pid = ctd.pid;
    drop(r);
    drop(ctd);
    assert!(!ctd_dir.exists());
    assert!(tests::containerd::mounts_under(&ctd_dir).is_empty());
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty()
            || stat
                .rsplit(')')
                .next()
                .unwrap()
                .trim_start()
                .starts_with('Z'),
        "containerd {pid} still running: {stat}"
    );
}
