//! The real kubectl against our API server, on the embedded store and on a real etcd: every
//! command the issue lists, with exit codes and the output upstream prints. Every scenario runs
//! with kubectl 1.32 and with kubectl 1.27 (v2beta1 aggregated discovery, `/openapi/v2`
//! protobuf for `explain` and `apply` validation, SPDY-era clients).

use std::ops::Deref;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;
use tests::{Backend, EtcdProcess, OutputExt, TestCluster};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::OnceCell;

static ETCD: OnceCell<Arc<EtcdProcess>> = OnceCell::const_new();

async fn etcd() -> Arc<EtcdProcess> {
    ETCD.get_or_init(|| async {
        Arc::new(
            EtcdProcess::start()
                .await
                .expect("start etcd (apt install etcd-server)"),
        )
    })
    .await
    .clone()
}

async fn cluster(etcd_backend: bool) -> TestCluster {
    let backend = if etcd_backend {
        Backend::Etcd(etcd().await)
    } else {
        Backend::Embedded
    };
    TestCluster::start(backend).await.expect("start apiserver")
}

/// A cluster driven by one particular kubectl binary. Derefs to the cluster (`dir`, `client`, …);
/// its own `kubectl*` methods run the chosen binary.
struct Kubectl<'a> {
    cluster: &'a TestCluster,
    bin: PathBuf,
}

impl Deref for Kubectl<'_> {
    type Target = TestCluster;
    fn deref(&self) -> &TestCluster {
        self.cluster
    }
}

impl Kubectl<'_> {
    async fn kubectl(&self, args: &[&str]) -> Output {
        self.cluster.kubectl_with(&self.bin, args, None).await
    }

    async fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        self.cluster
            .kubectl_with(&self.bin, args, Some(stdin))
            .await
    }

    async fn kubectl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        // Only `edit` needs an environment; it takes the editor from the environment alone.
        if self.bin == tests::kubectl_path() {
            return self.cluster.kubectl_env(args, env).await;
        }
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(args)
            .envs(env.iter().copied())
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache_dir)
            .env("HOME", self.dir.path())
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("kubectl finishes")
            .expect("kubectl ran")
    }

    fn kubectl_spawn(&self, args: &[&str]) -> tokio::process::Child {
        self.cluster.kubectl_spawn_with(&self.bin, args)
    }

    /// kubectl 1.27 (rather than the default 1.32).
    fn is_127(&self) -> bool {
        self.bin.to_string_lossy().ends_with("1.27")
    }
}

fn kubectl_127() -> PathBuf {
    tests::kubectl_127().expect("kubectl 1.27 at /usr/lib/google-cloud-sdk/bin/kubectl.1.27")
}

/// Generate one test per backend and kubectl version for a scenario `async fn name(c: &Kubectl)`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        both_backends!(@mod embedded, false, tests::kubectl_path(); $($name),*);
        both_backends!(@mod etcd, true, tests::kubectl_path(); $($name),*);
        both_backends!(@mod embedded_127, false, super::kubectl_127(); $($name),*);
        both_backends!(@mod etcd_127, true, super::kubectl_127(); $($name),*);
    };
    (@mod $module:ident, $etcd:expr, $bin:expr; $($name:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let c = super::cluster($etcd).await;
                    super::$name(&super::Kubectl { cluster: &c, bin: $bin }).await;
                    c.stop().await;
                }
            )*
        }
    };
}

both_backends!(
    bare_start_has_default_namespaces_and_kubernetes_service,
    version_api_resources_and_api_versions,
    create_get_and_delete_pods,
    create_generators_send_protobuf,
    apply_client_side_three_way_merge,
    apply_server_side_and_conflicts,
    replace_patch_label_annotate_scale,
    get_output_formats_and_selectors,
    delete_by_file_selector_and_all,
    bad_input_gets_clear_errors,
    get_watch_prints_header_once_then_rows,
    get_watch_only_skips_the_synthetic_added,
    proxy_serves_the_api_over_plain_http,
    describe_deployment_and_service,
    get_all_lists_the_all_category,
    server_dry_run_persists_nothing,
    run_dry_run_client_prints_yaml_without_writing,
    events_from_both_apis_show_in_get_and_describe,
    force_delete_bound_pod_is_immediate,
    cordon_and_uncordon_a_node,
    create_secret_from_file_and_nodeport_service,
    auth_can_i_and_whoami,
);

const DEPLOY_V1: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: c
        image: nginx:1.25
        env:
        - {name: A, value: "1"}
        ports:
        - containerPort: 80
"#;

async fn bare_start_has_default_namespaces_and_kubernetes_service(c: &Kubectl<'_>) {
    let ns = c.kubectl(&["get", "namespaces"]).await.ok();
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            ns.lines().any(|l| l.starts_with(n) && l.contains("Active")),
            "{n} missing:\n{ns}"
        );
    }
    let svc = c
        .kubectl(&["get", "svc", "kubernetes", "-o", "wide"])
        .await
        .ok();
    assert!(
        svc.contains("10.96.0.1") && svc.contains("443/TCP"),
        "{svc}"
    );
    assert!(
        svc.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            == [
                "NAME",
                "TYPE",
                "CLUSTER-IP",
                "EXTERNAL-IP",
                "PORT(S)",
                "AGE",
                "SELECTOR"
            ],
        "{svc}"
    );
}

async fn version_api_resources_and_api_versions(c: &Kubectl<'_>) {
    let v = c.kubectl(&["version"]).await.ok();
    let want = if c.is_127() {
        "GitVersion:\"v1.32"
    } else {
        "Server Version: v1.32"
    };
    assert!(v.contains(want), "{v}");
    let r = c.kubectl(&["api-resources"]).await.ok();
    for line in [
        "pods ",
        "po ",
        "deployments ",
        "deploy ",
        "apps/v1 ",
        "horizontalpodautoscalers ",
        "autoscaling/v2 ",
    ] {
        assert!(r.contains(line), "api-resources lacks {line:?}:\n{r}");
    }
    let av = c.kubectl(&["api-versions"]).await.ok();
    for gv in [
        "apps/v1",
        "autoscaling/v1",
        "autoscaling/v2",
        "batch/v1",
        "v1",
        "rbac.authorization.k8s.io/v1",
    ] {
        assert!(
            av.lines().any(|l| l == gv),
            "api-versions lacks {gv}:\n{av}"
        );
    }
    let ex = c.kubectl(&["explain", "deployment.spec"]).await.ok();
    assert!(
        ex.contains("KIND:") && ex.contains("Deployment") && ex.contains("replicas"),
        "{ex}"
    );
    // the /openapi/v2 protobuf document (what 1.27 `apply` also fetches for validation)
    let ex = c
        .kubectl(&["explain", "deployment.spec", "--output=plaintext-openapiv2"])
        .await
        .ok();
    assert!(
        ex.contains("KIND:     Deployment")
            && ex.contains("VERSION:  apps/v1")
            && ex.contains("RESOURCE: spec <Object>")
            && ex.contains("replicas\t<integer>"),
        "{ex}"
    );
    let ex = c
        .kubectl(&["explain", "pods.spec.containers.image"])
        .await
        .ok();
    assert!(
        ex.contains("FIELD:") && ex.contains("image") && ex.contains("Container image name"),
        "{ex}"
    );
    // a stale OpenAPI v3 hash is redirected to the current document (kube-openapi's handler3)
    let stale = c
        .kubectl(&[
            "get",
            "--raw",
            "/openapi/v3/apis/apps/v1?hash=stale",
            "-v=6",
        ])
        .await;
    let log = String::from_utf8_lossy(&stale.stderr).into_owned();
    let doc: serde_json::Value =
        serde_json::from_str(&stale.ok()).expect("the redirect target is the JSON document");
    assert!(doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"].is_object());
    assert!(
        log.contains("hash=stale 301 Moved Permanently")
            && log
                .lines()
                .any(|l| l.contains("/openapi/v3/apis/apps/v1?hash=") && l.contains("200 OK")),
        "{log}"
    );
}

async fn create_get_and_delete_pods(c: &Kubectl<'_>) {
    let out = c.kubectl(&["run", "web", "--image=nginx"]).await.ok();
    assert_eq!(out.trim(), "pod/web created");
    let get = c.kubectl(&["get", "pods"]).await.ok();
    let header: Vec<&str> = get.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert!(
        get.contains("web") && get.contains("0/1") && get.contains("Pending"),
        "{get}"
    );
    let wide = c.kubectl(&["get", "pod", "web", "-o", "wide"]).await.ok();
    assert!(
        wide.contains("NOMINATED NODE") && wide.contains("<none>"),
        "{wide}"
    );
    let y = c.kubectl(&["get", "pod", "web", "-o", "yaml"]).await.ok();
    for needle in [
        "restartPolicy: Always",
        "dnsPolicy: ClusterFirst",
        "terminationGracePeriodSeconds: 30",
        "imagePullPolicy: Always",
        "phase: Pending",
        "uid:",
        "resourceVersion:",
    ] {
        assert!(y.contains(needle), "defaults: {needle} missing:\n{y}");
    }
    let d = c.kubectl(&["describe", "pod", "web"]).await.ok();
    assert!(
        d.contains("Name:") && d.contains("web") && d.contains("Image:") && d.contains("nginx"),
        "{d}"
    );
    // unscheduled pods are deleted at once
    let del = c.kubectl(&["delete", "pod", "web"]).await.ok();
    assert_eq!(del.trim(), "pod \"web\" deleted");
    let gone = c.kubectl(&["get", "pod", "web"]).await.fails();
    assert!(
        gone.contains("Error from server (NotFound): pods \"web\" not found"),
        "{gone}"
    );
}

async fn create_generators_send_protobuf(c: &Kubectl<'_>) {
    assert_eq!(
        c.kubectl(&["create", "namespace", "team-a"])
            .await
            .ok()
            .trim(),
        "namespace/team-a created"
    );
    assert_eq!(
        c.kubectl(&[
            "create",
            "configmap",
            "cfg",
            "--from-literal=a=b",
            "-n",
            "team-a"
        ])
        .await
        .ok()
        .trim(),
        "configmap/cfg created"
    );
    let file = c.dir.path().join("game.properties");
    std::fs::write(&file, "lives=3\n").unwrap();
    let from_file = format!("--from-file={}", file.display());
    assert_eq!(
        c.kubectl(&["create", "configmap", "files", &from_file])
            .await
            .ok()
            .trim(),
        "configmap/files created"
    );
    assert_eq!(
        c.kubectl(&["create", "secret", "generic", "s", "--from-literal=k=v"])
            .await
            .ok()
            .trim(),
        "secret/s created"
    );
    assert_eq!(
        c.kubectl(&["create", "deployment", "web", "--image=nginx"])
            .await
            .ok()
            .trim(),
        "deployment.apps/web created"
    );
    assert_eq!(
        c.kubectl(&["create", "job", "once", "--image=busybox"])
            .await
            .ok()
            .trim(),
        "job.batch/once created"
    );
    assert_eq!(
        c.kubectl(&["create", "service", "clusterip", "api", "--tcp=80:8080"])
            .await
            .ok()
            .trim(),
        "service/api created"
    );
    let cm = c
        .kubectl(&[
            "get",
            "cm",
            "cfg",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.a}",
        ])
        .await
        .ok();
    assert_eq!(cm, "b");
    let f = c
        .kubectl(&[
            "get",
            "cm",
            "files",
            "-o",
            "jsonpath={.data.game\\.properties}",
        ])
        .await
        .ok();
    assert_eq!(f, "lives=3\n");
    let s = c
        .kubectl(&["get", "secret", "s", "-o", "jsonpath={.type} {.data.k}"])
        .await
        .ok();
    assert_eq!(s, "Opaque dg==");
    let d = c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.strategy.type}"]).await.ok();
    assert_eq!(d, "1 nginx RollingUpdate");
    let j = c
        .kubectl(&[
            "get",
            "job",
            "once",
            "-o",
            "jsonpath={.spec.template.spec.restartPolicy} {.spec.backoffLimit}",
        ])
        .await
        .ok();
    assert_eq!(j, "Never 6");
    let svc = c
        .kubectl(&[
            "get",
            "svc",
            "api",
            "-o",
            "jsonpath={.spec.ports[0].targetPort} {.spec.clusterIP}",
        ])
        .await
        .ok();
    assert!(svc.starts_with("8080 10."), "{svc}");
    let dup = c.kubectl(&["create", "namespace", "team-a"]).await.fails();
    assert!(
        dup.contains("AlreadyExists") && dup.contains("namespaces \"team-a\" already exists"),
        "{dup}"
    );
    // expose a deployment
    assert_eq!(
        c.kubectl(&["expose", "deployment", "web", "--port=80"])
            .await
            .ok()
            .trim(),
        "service/web exposed"
    );
    let sel = c
        .kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.selector.app}"])
        .await
        .ok();
    assert_eq!(sel, "web");
}

async fn apply_client_side_three_way_merge(c: &Kubectl<'_>) {
    let f = c.dir.path().join("deploy.yaml");
    std::fs::write(&f, DEPLOY_V1).unwrap();
    let fp = f.display().to_string();
    assert_eq!(
        c.kubectl(&["apply", "-f", &fp]).await.ok().trim(),
        "deployment.apps/web created"
    );
    assert_eq!(
        c.kubectl(&["apply", "-f", &fp]).await.ok().trim(),
        "deployment.apps/web unchanged"
    );
    let gen1 = c
        .kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.generation}",
        ])
        .await
        .ok();
    assert_eq!(gen1, "1");
    // someone else adds a label; apply must keep it (three-way merge) while dropping env
    c.kubectl(&["label", "deploy", "web", "team=blue"])
        .await
        .ok();
    let v2 = DEPLOY_V1
        .replace("replicas: 2", "replicas: 3")
        .replace("nginx:1.25", "nginx:1.26")
        .replace("        env:\n        - {name: A, value: \"1\"}\n", "");
    std::fs::write(&f, v2).unwrap();
    assert_eq!(
        c.kubectl(&["apply", "-f", &fp]).await.ok().trim(),
        "deployment.apps/web configured"
    );
    let got = c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.metadata.labels.team} {.spec.template.spec.containers[0].env} {.metadata.generation}"]).await.ok();
    assert_eq!(got, "3 nginx:1.26 blue  2");
    // diff against a changed manifest: exit 1 with a diff
    let v3 = DEPLOY_V1.replace("replicas: 2", "replicas: 5");
    std::fs::write(&f, v3).unwrap();
    let diff = c.kubectl(&["diff", "-f", &fp]).await;
    assert_eq!(
        diff.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(
        text.contains("-  replicas: 3") && text.contains("+  replicas: 5"),
        "{text}"
    );
    // dry-run did not persist
    assert_eq!(
        c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .await
            .ok(),
        "3"
    );
}

async fn apply_server_side_and_conflicts(c: &Kubectl<'_>) {
    let f = c.dir.path().join("deploy.yaml");
    std::fs::write(&f, DEPLOY_V1).unwrap();
    let fp = f.display().to_string();
    assert_eq!(
        c.kubectl(&["apply", "--server-side", "-f", &fp])
            .await
            .ok()
            .trim(),
        "deployment.apps/web serverside-applied"
    );
    let mf = c
        .kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.managedFields[0].manager} {.metadata.managedFields[0].operation}",
        ])
        .await
        .ok();
    assert_eq!(mf, "kubectl Apply");
    // another manager changes replicas; applying a different value conflicts
    c.kubectl(&["scale", "deploy", "web", "--replicas=4"])
        .await
        .ok();
    std::fs::write(&f, DEPLOY_V1.replace("replicas: 2", "replicas: 6")).unwrap();
    let err = c
        .kubectl(&["apply", "--server-side", "--field-manager=ci", "-f", &fp])
        .await
        .fails();
    assert!(
        err.contains("conflict") && err.contains(".spec.replicas"),
        "{err}"
    );
    c.kubectl(&[
        "apply",
        "--server-side",
        "--field-manager=ci",
        "--force-conflicts",
        "-f",
        &fp,
    ])
    .await
    .ok();
    assert_eq!(
        c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .await
            .ok(),
        "6"
    );
}

async fn replace_patch_label_annotate_scale(c: &Kubectl<'_>) {
    let f = c.dir.path().join("deploy.yaml");
    std::fs::write(&f, DEPLOY_V1).unwrap();
    let fp = f.display().to_string();
    c.kubectl(&["create", "-f", &fp]).await.ok();
    std::fs::write(&f, DEPLOY_V1.replace("nginx:1.25", "nginx:1.27")).unwrap();
    assert_eq!(
        c.kubectl(&["replace", "-f", &fp]).await.ok().trim(),
        "deployment.apps/web replaced"
    );
    assert_eq!(
        c.kubectl(&["patch", "deploy", "web", "-p", r#"{"spec":{"replicas":4}}"#])
            .await
            .ok()
            .trim(),
        "deployment.apps/web patched"
    );
    c.kubectl(&[
        "patch",
        "deploy",
        "web",
        "--type=merge",
        "-p",
        r#"{"metadata":{"labels":{"tier":"front"}}}"#,
    ])
    .await
    .ok();
    c.kubectl(&["patch", "deploy", "web", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"nginx:1.28"}]"#]).await.ok();
    let got = c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.metadata.labels.tier} {.spec.template.spec.containers[0].image}"]).await.ok();
    assert_eq!(got, "4 front nginx:1.28");
    assert_eq!(
        c.kubectl(&["label", "deploy", "web", "env=prod"])
            .await
            .ok()
            .trim(),
        "deployment.apps/web labeled"
    );
    let clash = c
        .kubectl(&["label", "deploy", "web", "env=dev"])
        .await
        .fails();
    assert!(clash.contains("already has a value (prod)"), "{clash}");
    c.kubectl(&["label", "deploy", "web", "env=dev", "--overwrite"])
        .await
        .ok();
    c.kubectl(&["label", "deploy", "web", "tier-"]).await.ok();
    // kubectl 1.27 prints "annotate" (kubernetes/kubectl#1462, fixed by kubernetes#118045)
    let annotated = if c.is_127() {
        "deployment.apps/web annotate"
    } else {
        "deployment.apps/web annotated"
    };
    assert_eq!(
        c.kubectl(&["annotate", "deploy", "web", "note=hello"])
            .await
            .ok()
            .trim(),
        annotated
    );
    c.kubectl(&["annotate", "deploy", "web", "note-"])
        .await
        .ok();
    let got = c
        .kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.labels.env}|{.metadata.labels.tier}|{.metadata.annotations.note}",
        ])
        .await
        .ok();
    assert_eq!(got, "dev||");
    assert_eq!(
        c.kubectl(&["scale", "deploy", "web", "--replicas=1"])
            .await
            .ok()
            .trim(),
        "deployment.apps/web scaled"
    );
    assert_eq!(
        c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"])
            .await
            .ok(),
        "1"
    );
    // edit with a scripted editor
    let editor = c.dir.path().join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/image: nginx:1.28/image: nginx:1.29/' \"$1\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&editor)
        .status()
        .unwrap();
    let ed = editor.display().to_string();
    let out = c
        .kubectl_env(
            &["edit", "deploy", "web"],
            &[("EDITOR", &ed), ("KUBE_EDITOR", &ed)],
        )
        .await
        .ok();
    assert_eq!(out.trim(), "deployment.apps/web edited");
    assert_eq!(
        c.kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ])
        .await
        .ok(),
        "nginx:1.29"
    );
}

async fn get_output_formats_and_selectors(c: &Kubectl<'_>) {
    c.kubectl(&["run", "a", "--image=nginx", "--labels=app=x,tier=front"])
        .await
        .ok();
    c.kubectl(&["run", "b", "--image=nginx", "--labels=app=y"])
        .await
        .ok();
    let names = c.kubectl(&["get", "pods", "-o", "name"]).await.ok();
    assert_eq!(names, "pod/a\npod/b\n");
    let l = c
        .kubectl(&["get", "pods", "-l", "app=x", "-o", "name"])
        .await
        .ok();
    assert_eq!(l, "pod/a\n");
    let l = c
        .kubectl(&[
            "get",
            "pods",
            "-l",
            "app in (x,y),tier!=front",
            "-o",
            "name",
        ])
        .await
        .ok();
    assert_eq!(l, "pod/b\n");
    let f = c
        .kubectl(&[
            "get",
            "pods",
            "--field-selector=metadata.name=b",
            "-o",
            "name",
        ])
        .await
        .ok();
    assert_eq!(f, "pod/b\n");
    let f = c
        .kubectl(&[
            "get",
            "pods",
            "--field-selector=status.phase=Pending",
            "-o",
            "name",
        ])
        .await
        .ok();
    assert_eq!(f, "pod/a\npod/b\n");
    let bad = c
        .kubectl(&["get", "pods", "--field-selector=spec.bogus=1"])
        .await
        .fails();
    assert!(
        bad.contains("field label not supported: spec.bogus"),
        "{bad}"
    );
    let sl = c.kubectl(&["get", "pods", "--show-labels"]).await.ok();
    assert!(
        sl.contains("LABELS") && sl.contains("app=x,tier=front"),
        "{sl}"
    );
    let all = c.kubectl(&["get", "pods", "-A"]).await.ok();
    assert!(all.starts_with("NAMESPACE"), "{all}");
    let cc = c
        .kubectl(&[
            "get",
            "pods",
            "-o",
            "custom-columns=N:.metadata.name,I:.spec.containers[0].image",
        ])
        .await
        .ok();
    let rows: Vec<Vec<&str>> = cc.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        vec![vec!["N", "I"], vec!["a", "nginx"], vec!["b", "nginx"]],
        "{cc}"
    );
    let sorted = c
        .kubectl(&["get", "pods", "--sort-by=.metadata.name", "-o", "name"])
        .await
        .ok();
    assert_eq!(sorted, "pod/a\npod/b\n");
    let j = c.kubectl(&["get", "pods", "-o", "json"]).await.ok();
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["kind"], "List");
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    let chunk = c
        .kubectl(&["get", "pods", "--chunk-size=1", "-o", "name"])
        .await
        .ok();
    assert_eq!(chunk, "pod/a\npod/b\n");
    let ev = c.kubectl(&["get", "events"]).await;
    assert!(
        ev.status.success(),
        "{}",
        String::from_utf8_lossy(&ev.stderr)
    );
    // config set-context --namespace then a namespaced get
    c.kubectl(&["create", "namespace", "other"]).await.ok();
    c.kubectl(&["config", "set-context", "--current", "--namespace=other"])
        .await
        .ok();
    let none = c.kubectl(&["get", "pods"]).await;
    assert!(
        String::from_utf8_lossy(&none.stderr).contains("No resources found in other namespace."),
        "{:?}",
        none
    );
    c.kubectl(&["config", "set-context", "--current", "--namespace=default"])
        .await
        .ok();
}

async fn delete_by_file_selector_and_all(c: &Kubectl<'_>) {
    let f = c.dir.path().join("deploy.yaml");
    std::fs::write(&f, DEPLOY_V1).unwrap();
    let fp = f.display().to_string();
    c.kubectl(&["create", "-f", &fp]).await.ok();
    assert_eq!(
        c.kubectl(&["delete", "-f", &fp]).await.ok().trim(),
        "deployment.apps \"web\" deleted"
    );
    c.kubectl(&["create", "configmap", "one", "--from-literal=a=1"])
        .await
        .ok();
    c.kubectl(&["create", "configmap", "two", "--from-literal=a=2"])
        .await
        .ok();
    c.kubectl(&["label", "cm", "one", "gone=yes"]).await.ok();
    assert_eq!(
        c.kubectl(&["delete", "cm", "-l", "gone=yes"])
            .await
            .ok()
            .trim(),
        "configmap \"one\" deleted"
    );
    let del = c.kubectl(&["delete", "cm", "--all"]).await.ok();
    assert!(del.contains("configmap \"two\" deleted"), "{del}");
    // orphaning is recorded for the garbage collector
    c.kubectl(&["create", "-f", &fp]).await.ok();
    let o = c
        .kubectl(&[
            "delete",
            "deploy",
            "web",
            "--cascade=orphan",
            "--wait=false",
        ])
        .await
        .ok();
    assert_eq!(o.trim(), "deployment.apps \"web\" deleted");
    let fin = c
        .kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.finalizers}",
        ])
        .await
        .ok();
    assert!(fin.contains("orphan"), "{fin}");
    // wait --for=delete on an object that goes away
    c.kubectl(&["run", "w", "--image=nginx"]).await.ok();
    let (wait, del) = tokio::join!(
        c.kubectl(&["wait", "--for=delete", "pod/w", "--timeout=30s"]),
        async {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            c.kubectl(&["delete", "pod", "w", "--wait=false"]).await
        }
    );
    del.ok();
    assert!(wait.ok().contains("pod/w condition met"));
}

async fn bad_input_gets_clear_errors(c: &Kubectl<'_>) {
    let f = c.dir.path().join("bad.yaml");
    std::fs::write(&f, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers:\n  - name: c\n").unwrap();
    let err = c
        .kubectl(&["create", "-f", &f.display().to_string()])
        .await
        .fails();
    assert!(
        err.contains("is invalid")
            && err.contains("metadata.name: Invalid value: \"Bad_Name\"")
            && err.contains("spec.containers[0].image: Required value"),
        "{err}"
    );
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\nbogus: 1\n",
    )
    .unwrap();
    let err = c
        .kubectl(&["create", "-f", &f.display().to_string()])
        .await
        .fails();
    assert!(err.contains("unknown field \"bogus\""), "{err}");
    let err = c.kubectl(&["get", "frobnicators"]).await.fails();
    assert!(
        err.contains("the server doesn't have a resource type \"frobnicators\""),
        "{err}"
    );
    // stale resourceVersion on replace
    c.kubectl(&["create", "configmap", "cm", "--from-literal=a=1"])
        .await
        .ok();
    let y = c.kubectl(&["get", "cm", "cm", "-o", "yaml"]).await.ok();
    c.kubectl(&["label", "cm", "cm", "x=y"]).await.ok();
    std::fs::write(&f, y).unwrap();
    let err = c
        .kubectl(&["replace", "-f", &f.display().to_string()])
        .await
        .fails();
    assert!(
        err.contains(
            "Operation cannot be fulfilled on configmaps \"cm\": the object has been modified"
        ),
        "{err}"
    );
}

/// Write `content` into the cluster's temp dir and return the path as a string.
fn manifest(c: &Kubectl<'_>, name: &str, content: &str) -> String {
    let f = c.dir.path().join(name);
    std::fs::write(&f, content).unwrap();
    f.display().to_string()
}

type LineReader<R> = tokio::io::Lines<BufReader<R>>;

/// The next line a spawned kubectl prints, failing the test after 20s or at end of stream.
async fn next_line<R: tokio::io::AsyncRead + Unpin>(
    lines: &mut LineReader<R>,
    what: &str,
) -> String {
    match tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await {
        Ok(Ok(Some(l))) => l,
        Ok(Ok(None)) => panic!("kubectl ended before {what}"),
        Ok(Err(e)) => panic!("reading kubectl output for {what}: {e}"),
        Err(_) => panic!("no output line for {what} within 20s"),
    }
}

/// Wait until a spawned kubectl (run with `-v=6`) logs the response to its watch request, so
/// changes made afterwards arrive as watch events.
async fn await_watch_established<R: tokio::io::AsyncRead + Unpin>(stderr: &mut LineReader<R>) {
    loop {
        let l = next_line(stderr, "the watch request in kubectl's -v=6 log").await;
        if l.contains("watch=true") && l.contains("200 OK") {
            return;
        }
    }
}

fn split_row(l: &str) -> Vec<&str> {
    l.split_whitespace().collect()
}

async fn get_watch_prints_header_once_then_rows(c: &Kubectl<'_>) {
    c.kubectl(&["run", "a", "--image=nginx"]).await.ok();
    let mut child = c.kubectl_spawn(&["get", "pods", "-w", "-v=6"]);
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    assert_eq!(
        split_row(&next_line(&mut out, "the header").await),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    let first = next_line(&mut out, "the listed pod").await;
    assert_eq!(
        split_row(&first)[..4],
        ["a", "0/1", "Pending", "0"],
        "{first}"
    );
    await_watch_established(&mut err).await;
    // ADDED
    c.kubectl(&["run", "b", "--image=nginx"]).await.ok();
    let added = next_line(&mut out, "the ADDED row").await;
    assert_eq!(
        split_row(&added)[..4],
        ["b", "0/1", "Pending", "0"],
        "{added}"
    );
    // MODIFIED: a row again, and no second header
    c.kubectl(&["label", "pod", "a", "seen=yes"]).await.ok();
    let modified = next_line(&mut out, "the MODIFIED row").await;
    assert_eq!(split_row(&modified)[0], "a", "{modified}");
    // DELETED (unscheduled pods go at once)
    c.kubectl(&["delete", "pod", "b", "--wait=false"])
        .await
        .ok();
    let deleted = next_line(&mut out, "the DELETED row").await;
    assert_eq!(split_row(&deleted)[0], "b", "{deleted}");
    child.kill().await.unwrap();
}

async fn get_watch_only_skips_the_synthetic_added(c: &Kubectl<'_>) {
    c.kubectl(&["run", "a", "--image=nginx"]).await.ok();
    // A single object: kubectl watches from resourceVersion=0 and drops the first event, which
    // the server must send as a synthetic ADDED; the first real change is then printed.
    let mut child = c.kubectl_spawn(&["get", "pod", "a", "--watch-only", "--show-labels", "-v=6"]);
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    await_watch_established(&mut err).await;
    c.kubectl(&["label", "pod", "a", "step=one"]).await.ok();
    let header = next_line(&mut out, "the header").await;
    assert_eq!(
        split_row(&header),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "LABELS"]
    );
    let row = next_line(&mut out, "the row of the first change").await;
    assert!(row.starts_with("a ") && row.contains("step=one"), "{row}");
    child.kill().await.unwrap();

    // A list: watched from the list's resourceVersion, so nothing is replayed.
    let mut child = c.kubectl_spawn(&["get", "pods", "--watch-only", "-v=6"]);
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    await_watch_established(&mut err).await;
    c.kubectl(&["run", "b", "--image=nginx"]).await.ok();
    assert_eq!(
        split_row(&next_line(&mut out, "the header").await),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    );
    let row = next_line(&mut out, "the new pod").await;
    assert!(
        row.starts_with("b "),
        "the existing pod was replayed or the new one is missing: {row}"
    );
    child.kill().await.unwrap();
}

/// A plain HTTP/1.1 GET; returns the status code and the (de-chunked) body.
async fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to kubectl proxy");
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut raw))
        .await
        .expect("proxy answers")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    if !chunked {
        return (code, body.to_string());
    }
    let mut rest = body;
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&tail[..n]);
        rest = &tail[n + 2..];
    }
    (code, out)
}

async fn proxy_serves_the_api_over_plain_http(c: &Kubectl<'_>) {
    c.kubectl(&["create", "configmap", "through-proxy", "--from-literal=a=b"])
        .await
        .ok();
    let mut child = c.kubectl_spawn(&["proxy", "--port=0"]);
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = next_line(&mut out, "the proxy banner").await;
    let port: u16 = line
        .strip_prefix("Starting to serve on 127.0.0.1:")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected banner {line:?}"));
    let (code, body) = http_get(port, "/api/v1/namespaces/default/services/").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["kind"], "ServiceList", "{body}");
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["metadata"]["name"] == "kubernetes"),
        "{body}"
    );
    let (code, body) = http_get(port, "/api/v1/namespaces/default/configmaps").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["kind"], "ConfigMapList");
    assert!(
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["metadata"]["name"] == "through-proxy" && s["data"]["a"] == "b"),
        "{body}"
    );
    // kubectl itself through the proxy: discovery, tables and a streaming watch over plain HTTP
    let server = format!("--server=http://127.0.0.1:{port}");
    assert_eq!(
        c.kubectl(&[&server, "get", "cm", "through-proxy", "-o", "name"])
            .await
            .ok(),
        "configmap/through-proxy\n"
    );
    let mut watch = c.kubectl_spawn(&[
        &server,
        "get",
        "cm",
        "through-proxy",
        "--watch-only",
        "--show-labels",
        "-v=6",
    ]);
    let mut wout = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut werr = BufReader::new(watch.stderr.take().unwrap()).lines();
    await_watch_established(&mut werr).await;
    c.kubectl(&["label", "cm", "through-proxy", "via=proxy"])
        .await
        .ok();
    next_line(&mut wout, "the watch header through the proxy").await;
    let row = next_line(&mut wout, "the watch row through the proxy").await;
    assert!(
        row.starts_with("through-proxy ") && row.contains("via=proxy"),
        "{row}"
    );
    watch.kill().await.unwrap();
    let (code, body) = http_get(port, "/api/v1/namespaces/default/configmaps/nope").await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains("configmaps \\\"nope\\\" not found"), "{body}");
    child.kill().await.unwrap();
}

async fn describe_deployment_and_service(c: &Kubectl<'_>) {
    let fp = manifest(c, "deploy.yaml", DEPLOY_V1);
    c.kubectl(&["create", "-f", &fp]).await.ok();
    c.kubectl(&[
        "expose",
        "deployment",
        "web",
        "--port=80",
        "--target-port=8080",
    ])
    .await
    .ok();
    let d = c.kubectl(&["describe", "deployment", "web"]).await.ok();
    for needle in [
        "Name:                   web",
        "Namespace:              default",
        "Labels:                 app=web",
        "Selector:               app=web",
        "Replicas:               2 desired | 0 updated | 0 total | 0 available | 0 unavailable",
        "StrategyType:           RollingUpdate",
        "RollingUpdateStrategy:  25% max unavailable, 25% max surge",
        "Pod Template:",
        "    Image:      nginx:1.25",
        "    Port:       80/TCP",
    ] {
        assert!(
            d.contains(needle),
            "describe deployment lacks {needle:?}:\n{d}"
        );
    }
    // a ReplicaSet the deployment controls is listed (by selector and controller reference)
    let uid = c
        .kubectl(&["get", "deploy", "web", "-o", "jsonpath={.metadata.uid}"])
        .await
        .ok();
    let rs = format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: web-old\n  labels: {{app: web, pod-template-hash: old}}\n  ownerReferences: [{{apiVersion: apps/v1, kind: Deployment, name: web, uid: {uid}, controller: true}}]\nspec:\n  replicas: 0\n  selector: {{matchLabels: {{app: web, pod-template-hash: old}}}}\n  template:\n    metadata: {{labels: {{app: web, pod-template-hash: old}}}}\n    spec: {{containers: [{{name: c, image: nginx:1.24}}]}}\n"
    );
    c.kubectl_stdin(&["create", "-f", "-"], &rs).await.ok();
    let d = c.kubectl(&["describe", "deployment", "web"]).await.ok();
    assert!(d.lines().any(|l| split_row(l) == ["OldReplicaSets:", "web-old", "(0/0", "replicas", "created)"]), "{d}");
    assert!(
        d.lines()
            .any(|l| split_row(l) == ["NewReplicaSet:", "<none>"]),
        "{d}"
    );
    let s = c.kubectl(&["describe", "svc", "web"]).await.ok();
    for needle in [
        "Name:",
        "web",
        "Selector:",
        "app=web",
        "Type:",
        "ClusterIP",
        "IP Families:",
        "IPv4",
        "Port:",
        "80/TCP",
        "TargetPort:",
        "8080/TCP",
        "Session Affinity:",
        "None",
    ] {
        assert!(s.contains(needle), "describe svc lacks {needle:?}:\n{s}");
    }
    let ip = c
        .kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"])
        .await
        .ok();
    assert!(
        s.lines().any(|l| l.starts_with("IP:") && l.ends_with(&ip)),
        "{s}"
    );
}

async fn get_all_lists_the_all_category(c: &Kubectl<'_>) {
    let fp = manifest(c, "deploy.yaml", DEPLOY_V1);
    c.kubectl(&["create", "-f", &fp]).await.ok();
    c.kubectl(&["create", "job", "once", "--image=busybox"])
        .await
        .ok();
    c.kubectl(&["run", "p", "--image=nginx"]).await.ok();
    c.kubectl(&["create", "configmap", "not-in-all"]).await.ok();
    let all = c.kubectl(&["get", "all"]).await.ok();
    for needle in [
        "pod/p",
        "service/kubernetes",
        "deployment.apps/web",
        "job.batch/once",
    ] {
        assert!(
            all.lines().any(|l| l.starts_with(needle)),
            "get all lacks {needle}:\n{all}"
        );
    }
    assert!(!all.contains("not-in-all"), "{all}");
    let header = all
        .lines()
        .find(|l| l.starts_with("NAME") && l.contains("READY   UP-TO-DATE"))
        .unwrap_or_else(|| panic!("{all}"));
    assert_eq!(
        split_row(header),
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
}

async fn server_dry_run_persists_nothing(c: &Kubectl<'_>) {
    let fp = manifest(c, "deploy.yaml", DEPLOY_V1);
    let out = c
        .kubectl(&["create", "-f", &fp, "--dry-run=server"])
        .await
        .ok();
    assert_eq!(out.trim(), "deployment.apps/web created (server dry run)");
    let out = c
        .kubectl(&["apply", "-f", &fp, "--dry-run=server"])
        .await
        .ok();
    assert_eq!(out.trim(), "deployment.apps/web created (server dry run)");
    let out = c
        .kubectl(&["apply", "--server-side", "-f", &fp, "--dry-run=server"])
        .await
        .ok();
    assert_eq!(
        out.trim(),
        "deployment.apps/web serverside-applied (server dry run)"
    );
    let out = c
        .kubectl(&[
            "create",
            "configmap",
            "dry",
            "--from-literal=a=b",
            "--dry-run=server",
        ])
        .await
        .ok();
    assert_eq!(out.trim(), "configmap/dry created (server dry run)");
    // server dry run returns the would-be object, with server-set fields
    let y = c
        .kubectl(&["create", "-f", &fp, "--dry-run=server", "-o", "yaml"])
        .await
        .ok();
    assert!(
        y.contains("uid:") && y.contains("progressDeadlineSeconds: 600"),
        "{y}"
    );
    let none = c.kubectl(&["get", "deploy,cm", "-o", "name"]).await.ok();
    assert_eq!(
        none.lines()
            .filter(|l| *l != "configmap/kube-root-ca.crt")
            .collect::<Vec<_>>(),
        Vec::<&str>::new(),
        "{none}"
    );

    c.kubectl(&["create", "-f", &fp]).await.ok();
    let rv = c
        .kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.resourceVersion}",
        ])
        .await
        .ok();
    std::fs::write(&fp, DEPLOY_V1.replace("replicas: 2", "replicas: 7")).unwrap();
    let out = c
        .kubectl(&["apply", "-f", &fp, "--dry-run=server"])
        .await
        .ok();
    assert_eq!(
        out.trim(),
        "deployment.apps/web configured (server dry run)"
    );
    let out = c
        .kubectl(&["delete", "-f", &fp, "--dry-run=server"])
        .await
        .ok();
    assert_eq!(
        out.trim(),
        "deployment.apps \"web\" deleted (server dry run)"
    );
    let out = c
        .kubectl(&["delete", "deploy", "web", "--dry-run=server"])
        .await
        .ok();
    assert_eq!(
        out.trim(),
        "deployment.apps \"web\" deleted (server dry run)"
    );
    let got = c
        .kubectl(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.resourceVersion}",
        ])
        .await
        .ok();
    assert_eq!(got, format!("2 {rv}"));
}

async fn run_dry_run_client_prints_yaml_without_writing(c: &Kubectl<'_>) {
    let y = c
        .kubectl(&[
            "run",
            "x",
            "--image=nginx",
            "--dry-run=client",
            "-o",
            "yaml",
        ])
        .await
        .ok();
    let v: serde_json::Value = serde_yaml::from_str(&y).unwrap_or_else(|e| panic!("{e}:\n{y}"));
    assert_eq!(v["kind"], "Pod");
    assert_eq!(v["metadata"]["labels"]["run"], "x");
    assert_eq!(v["spec"]["containers"][0]["image"], "nginx");
    let out = c
        .kubectl(&["run", "x", "--image=nginx", "--dry-run=server"])
        .await
        .ok();
    assert_eq!(out.trim(), "pod/x created (server dry run)");
    let err = c.kubectl(&["get", "pod", "x"]).await.fails();
    assert!(err.contains("pods \"x\" not found"), "{err}");
    // the printed manifest is accepted as is
    let fp = manifest(c, "pod.yaml", &y);
    assert_eq!(
        c.kubectl(&["create", "-f", &fp]).await.ok().trim(),
        "pod/x created"
    );
}

async fn events_from_both_apis_show_in_get_and_describe(c: &Kubectl<'_>) {
    c.kubectl(&["run", "x", "--image=nginx"]).await.ok();
    let uid = c
        .kubectl(&["get", "pod", "x", "-o", "jsonpath={.metadata.uid}"])
        .await
        .ok();
    let core = format!(
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: x.core\ninvolvedObject:\n  apiVersion: v1\n  kind: Pod\n  name: x\n  namespace: default\n  uid: {uid}\nreason: CoreReason\nmessage: written through core v1\ntype: Normal\nsource:\n  component: e2e-core\nfirstTimestamp: \"2024-01-01T00:00:00Z\"\nlastTimestamp: \"2024-01-01T00:00:00Z\"\ncount: 1\n"
    );
    let new = format!(
        "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: x.new\neventTime: \"2024-01-01T00:00:00.000000Z\"\nregarding:\n  apiVersion: v1\n  kind: Pod\n  name: x\n  namespace: default\n  uid: {uid}\nreason: NewReason\nnote: written through events.k8s.io\ntype: Warning\naction: Testing\nreportingController: example.com/e2e\nreportingInstance: e2e-1\n"
    );
    assert_eq!(
        c.kubectl(&["create", "-f", &manifest(c, "core.yaml", &core)])
            .await
            .ok()
            .trim(),
        "event/x.core created"
    );
    assert_eq!(
        c.kubectl(&["create", "-f", &manifest(c, "new.yaml", &new)])
            .await
            .ok()
            .trim(),
        "event.events.k8s.io/x.new created"
    );
    let ev = c.kubectl(&["get", "events"]).await.ok();
    assert_eq!(
        split_row(ev.lines().next().unwrap()),
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"],
        "{ev}"
    );
    let rows: Vec<String> = ev
        .lines()
        .skip(1)
        .map(|l| split_row(l)[1..].join(" "))
        .collect();
    assert_eq!(
        rows,
        [
            "Normal CoreReason pod/x written through core v1",
            "Warning NewReason pod/x written through events.k8s.io"
        ],
        "{ev}"
    );
    // each API reads the other's objects
    // (field renames only, as upstream's conversion: no source is made up for new-style events)
    let core_view = c
        .kubectl(&[
            "get",
            "events.v1.",
            "x.new",
            "-o",
            "jsonpath={.involvedObject.uid} {.message} {.reportingComponent}|{.source}",
        ])
        .await
        .ok();
    assert_eq!(
        core_view,
        format!("{uid} written through events.k8s.io example.com/e2e|")
    );
    let new_view = c.kubectl(&["get", "events.v1.events.k8s.io", "x.core", "-o", "jsonpath={.regarding.name} {.note} {.deprecatedSource.component}|{.reportingController}"]).await.ok();
    assert_eq!(new_view, "x written through core v1 e2e-core|");
    let d = c.kubectl(&["describe", "pod", "x"]).await.ok();
    let events = d
        .split_once("Events:")
        .map(|(_, e)| e)
        .unwrap_or_else(|| panic!("no Events section:\n{d}"));
    for needle in [
        "Normal   CoreReason",
        "e2e-core",
        "written through core v1",
        "Warning  NewReason",
        "written through events.k8s.io",
    ] {
        assert!(
            events.contains(needle),
            "describe pod events lack {needle:?}:\n{d}"
        );
    }
    let kev = c.kubectl(&["events", "--for", "pod/x"]).await.ok();
    assert!(
        kev.contains("CoreReason") && kev.contains("NewReason"),
        "{kev}"
    );
}

const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  labels:\n    kubernetes.io/hostname: n1\n";

async fn force_delete_bound_pod_is_immediate(c: &Kubectl<'_>) {
    c.kubectl(&["create", "-f", &manifest(c, "node.yaml", NODE)])
        .await
        .ok();
    let pod = |name: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: n1\n  containers:\n  - name: c\n    image: nginx\n")
    };
    c.kubectl(&["create", "-f", &manifest(c, "p1.yaml", &pod("bound"))])
        .await
        .ok();
    // a pod on a node is deleted gracefully: it stays, marked, until the kubelet confirms
    c.kubectl(&["delete", "pod", "bound", "--wait=false"])
        .await
        .ok();
    let marked = c
        .kubectl(&[
            "get",
            "pod",
            "bound",
            "-o",
            "jsonpath={.metadata.deletionGracePeriodSeconds} {.metadata.deletionTimestamp}",
        ])
        .await
        .ok();
    assert!(marked.starts_with("30 20"), "{marked}");
    let t = c.kubectl(&["get", "pod", "bound"]).await.ok();
    assert!(t.contains("Terminating"), "{t}");
    let forced = c
        .kubectl(&["delete", "pod", "bound", "--grace-period=0", "--force"])
        .await;
    let out = forced.ok();
    assert_eq!(out.trim(), "pod \"bound\" force deleted");
    assert!(
        String::from_utf8_lossy(&forced.stderr)
            .contains("Immediate deletion does not wait for confirmation"),
        "{forced:?}"
    );
    let gone = c.kubectl(&["get", "pod", "bound"]).await.fails();
    assert!(gone.contains("pods \"bound\" not found"), "{gone}");
    // and straight away, without a graceful delete first
    c.kubectl(&["create", "-f", &manifest(c, "p2.yaml", &pod("bound2"))])
        .await
        .ok();
    assert_eq!(
        c.kubectl(&["delete", "pod", "bound2", "--grace-period=0", "--force"])
            .await
            .ok()
            .trim(),
        "pod \"bound2\" force deleted"
    );
    c.kubectl(&["get", "pod", "bound2"]).await.fails();
}

async fn cordon_and_uncordon_a_node(c: &Kubectl<'_>) {
    assert_eq!(
        c.kubectl_stdin(&["create", "-f", "-"], NODE)
            .await
            .ok()
            .trim(),
        "node/n1 created"
    );
    let nodes = c.kubectl(&["get", "nodes"]).await.ok();
    assert_eq!(
        split_row(nodes.lines().next().unwrap()),
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "{nodes}"
    );
    assert_eq!(
        split_row(nodes.lines().nth(1).unwrap())[..3],
        ["n1", "Unknown", "<none>"],
        "{nodes}"
    );
    assert_eq!(
        c.kubectl(&["cordon", "n1"]).await.ok().trim(),
        "node/n1 cordoned"
    );
    let nodes = c.kubectl(&["get", "nodes"]).await.ok();
    assert_eq!(
        split_row(nodes.lines().nth(1).unwrap())[..2],
        ["n1", "Unknown,SchedulingDisabled"],
        "{nodes}"
    );
    assert_eq!(
        c.kubectl(&["cordon", "n1"]).await.ok().trim(),
        "node/n1 already cordoned"
    );
    assert_eq!(
        c.kubectl(&["uncordon", "n1"]).await.ok().trim(),
        "node/n1 uncordoned"
    );
    let unsched = c
        .kubectl(&["get", "node", "n1", "-o", "jsonpath={.spec.unschedulable}"])
        .await
        .ok();
    assert_eq!(unsched, "");
    let d = c.kubectl(&["describe", "node", "n1"]).await.ok();
    assert!(d.contains("Unschedulable:      false"), "{d}");
}

async fn create_secret_from_file_and_nodeport_service(c: &Kubectl<'_>) {
    let file = c.dir.path().join("token.txt");
    std::fs::write(&file, "s3cr3t\n").unwrap();
    let from_file = format!("--from-file={}", file.display());
    assert_eq!(
        c.kubectl(&["create", "secret", "generic", "sf", &from_file])
            .await
            .ok()
            .trim(),
        "secret/sf created"
    );
    let data = c
        .kubectl(&["get", "secret", "sf", "-o", "jsonpath={.data.token\\.txt}"])
        .await
        .ok();
    assert_eq!(data, "czNjcjN0Cg==");
    let renamed = format!("--from-file=key={}", file.display());
    c.kubectl(&["create", "secret", "generic", "sk", &renamed])
        .await
        .ok();
    assert_eq!(
        c.kubectl(&["get", "secret", "sk", "-o", "jsonpath={.data.key}"])
            .await
            .ok(),
        "czNjcjN0Cg=="
    );
    let get = c.kubectl(&["get", "secret", "sf"]).await.ok();
    assert_eq!(
        split_row(get.lines().nth(1).unwrap())[..3],
        ["sf", "Opaque", "1"],
        "{get}"
    );

    assert_eq!(
        c.kubectl(&["create", "service", "nodeport", "np", "--tcp=80:8080"])
            .await
            .ok()
            .trim(),
        "service/np created"
    );
    let np = c
        .kubectl(&[
            "get",
            "svc",
            "np",
            "-o",
            "jsonpath={.spec.type} {.spec.ports[0].nodePort} {.spec.ports[0].targetPort}",
        ])
        .await
        .ok();
    let parts = split_row(&np);
    assert_eq!((parts[0], parts[2]), ("NodePort", "8080"), "{np}");
    let node_port: u16 = parts[1].parse().unwrap();
    assert!((30000..=32767).contains(&node_port), "{np}");
    let row = c.kubectl(&["get", "svc", "np"]).await.ok();
    assert!(
        row.contains(&format!("80:{node_port}/TCP")) && row.contains("NodePort"),
        "{row}"
    );
    let fixed = c
        .kubectl(&[
            "create",
            "service",
            "nodeport",
            "np2",
            "--tcp=81:81",
            "--node-port=30081",
        ])
        .await
        .ok();
    assert_eq!(fixed.trim(), "service/np2 created");
    let clash = c
        .kubectl(&[
            "create",
            "service",
            "nodeport",
            "np3",
            "--tcp=82:82",
            "--node-port=30081",
        ])
        .await
        .fails();
    assert!(
        clash.contains("provided port is already allocated"),
        "{clash}"
    );
}

async fn auth_can_i_and_whoami(c: &Kubectl<'_>) {
    assert_eq!(
        c.kubectl(&["auth", "can-i", "create", "pods"])
            .await
            .ok()
            .trim(),
        "yes"
    );
    assert_eq!(
        c.kubectl(&[
            "auth",
            "can-i",
            "delete",
            "deployments.apps",
            "-n",
            "kube-system"
        ])
        .await
        .ok()
        .trim(),
        "yes"
    );
    if c.is_127() {
        // 1.27 has no `auth whoami` (it ships with no alpha commands; beta in 1.28).
        return;
    }
    let who = c.kubectl(&["auth", "whoami"]).await.ok();
    let rows: Vec<Vec<&str>> = who.lines().map(split_row).collect();
    assert_eq!(rows[0], ["ATTRIBUTE", "VALUE"], "{who}");
    assert!(
        rows.contains(&vec!["Username", "kubernetes-admin"]),
        "{who}"
    );
    assert!(
        who.lines().any(|l| l.starts_with("Groups")
            && l.contains("system:masters")
            && l.contains("system:authenticated")),
        "{who}"
    );
}
