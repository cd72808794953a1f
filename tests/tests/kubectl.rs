//! The real kubectl against our API server, on the embedded store and on a real etcd: every
//! command the issue lists, with exit codes and the output upstream prints.

use std::sync::Arc;
use tests::{Backend, EtcdProcess, OutputExt, TestCluster};
use tokio::sync::OnceCell;

static ETCD: OnceCell<Arc<EtcdProcess>> = OnceCell::const_new();

async fn etcd() -> Arc<EtcdProcess> {
    ETCD.get_or_init(|| async { Arc::new(EtcdProcess::start().await.expect("start etcd (apt install etcd-server)")) }).await.clone()
}

async fn cluster(etcd_backend: bool) -> TestCluster {
    let backend = if etcd_backend { Backend::Etcd(etcd().await) } else { Backend::Embedded };
    TestCluster::start(backend).await.expect("start apiserver")
}

/// Generate one test per backend for a scenario `async fn name(c: &TestCluster)`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let c = super::cluster(false).await;
                    super::$name(&c).await;
                    c.stop().await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let c = super::cluster(true).await;
                    super::$name(&c).await;
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

async fn bare_start_has_default_namespaces_and_kubernetes_service(c: &TestCluster) {
    let ns = c.kubectl(&["get", "namespaces"]).await.ok();
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.lines().any(|l| l.starts_with(n) && l.contains("Active")), "{n} missing:\n{ns}");
    }
    let svc = c.kubectl(&["get", "svc", "kubernetes", "-o", "wide"]).await.ok();
    assert!(svc.contains("10.96.0.1") && svc.contains("443/TCP"), "{svc}");
    assert!(svc.lines().next().unwrap().split_whitespace().collect::<Vec<_>>() == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE", "SELECTOR"], "{svc}");
}

async fn version_api_resources_and_api_versions(c: &TestCluster) {
    let v = c.kubectl(&["version"]).await.ok();
    assert!(v.contains("Server Version: v1.32"), "{v}");
    let r = c.kubectl(&["api-resources"]).await.ok();
    for line in ["pods ", "po ", "deployments ", "deploy ", "apps/v1 ", "horizontalpodautoscalers ", "autoscaling/v2 "] {
        assert!(r.contains(line), "api-resources lacks {line:?}:\n{r}");
    }
    let av = c.kubectl(&["api-versions"]).await.ok();
    for gv in ["apps/v1", "autoscaling/v1", "autoscaling/v2", "batch/v1", "v1", "rbac.authorization.k8s.io/v1"] {
        assert!(av.lines().any(|l| l == gv), "api-versions lacks {gv}:\n{av}");
    }
    let ex = c.kubectl(&["explain", "deployment.spec"]).await.ok();
    assert!(ex.contains("KIND:") && ex.contains("Deployment") && ex.contains("replicas"), "{ex}");
}

async fn create_get_and_delete_pods(c: &TestCluster) {
    let out = c.kubectl(&["run", "web", "--image=nginx"]).await.ok();
    assert_eq!(out.trim(), "pod/web created");
    let get = c.kubectl(&["get", "pods"]).await.ok();
    let header: Vec<&str> = get.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert!(get.contains("web") && get.contains("0/1") && get.contains("Pending"), "{get}");
    let wide = c.kubectl(&["get", "pod", "web", "-o", "wide"]).await.ok();
    assert!(wide.contains("NOMINATED NODE") && wide.contains("<none>"), "{wide}");
    let y = c.kubectl(&["get", "pod", "web", "-o", "yaml"]).await.ok();
    for needle in ["restartPolicy: Always", "dnsPolicy: ClusterFirst", "terminationGracePeriodSeconds: 30", "imagePullPolicy: Always", "phase: Pending", "uid:", "resourceVersion:"] {
        assert!(y.contains(needle), "defaults: {needle} missing:\n{y}");
    }
    let d = c.kubectl(&["describe", "pod", "web"]).await.ok();
    assert!(d.contains("Name:") && d.contains("web") && d.contains("Image:") && d.contains("nginx"), "{d}");
    // unscheduled pods are deleted at once
    let del = c.kubectl(&["delete", "pod", "web"]).await.ok();
    assert_eq!(del.trim(), "pod \"web\" deleted");
    let gone = c.kubectl(&["get", "pod", "web"]).await.fails();
    assert!(gone.contains("Error from server (NotFound): pods \"web\" not found"), "{gone}");
}

async fn create_generators_send_protobuf(c: &TestCluster) {
    assert_eq!(c.kubectl(&["create", "namespace", "team-a"]).await.ok().trim(), "namespace/team-a created");
    assert_eq!(c.kubectl(&["create", "configmap", "cfg", "--from-literal=a=b", "-n", "team-a"]).await.ok().trim(), "configmap/cfg created");
    let file = c.dir.path().join("game.properties");
    std::fs::write(&file, "lives=3\n").unwrap();
    let from_file = format!("--from-file={}", file.display());
    assert_eq!(c.kubectl(&["create", "configmap", "files", &from_file]).await.ok().trim(), "configmap/files created");
    assert_eq!(c.kubectl(&["create", "secret", "generic", "s", "--from-literal=k=v"]).await.ok().trim(), "secret/s created");
    assert_eq!(c.kubectl(&["create", "deployment", "web", "--image=nginx"]).await.ok().trim(), "deployment.apps/web created");
    assert_eq!(c.kubectl(&["create", "job", "once", "--image=busybox"]).await.ok().trim(), "job.batch/once created");
    assert_eq!(c.kubectl(&["create", "service", "clusterip", "api", "--tcp=80:8080"]).await.ok().trim(), "service/api created");
    let cm = c.kubectl(&["get", "cm", "cfg", "-n", "team-a", "-o", "jsonpath={.data.a}"]).await.ok();
    assert_eq!(cm, "b");
    let f = c.kubectl(&["get", "cm", "files", "-o", "jsonpath={.data.game\\.properties}"]).await.ok();
    assert_eq!(f, "lives=3\n");
    let s = c.kubectl(&["get", "secret", "s", "-o", "jsonpath={.type} {.data.k}"]).await.ok();
    assert_eq!(s, "Opaque dg==");
    let d = c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.strategy.type}"]).await.ok();
    assert_eq!(d, "1 nginx RollingUpdate");
    let j = c.kubectl(&["get", "job", "once", "-o", "jsonpath={.spec.template.spec.restartPolicy} {.spec.backoffLimit}"]).await.ok();
    assert_eq!(j, "Never 6");
    let svc = c.kubectl(&["get", "svc", "api", "-o", "jsonpath={.spec.ports[0].targetPort} {.spec.clusterIP}"]).await.ok();
    assert!(svc.starts_with("8080 10."), "{svc}");
    let dup = c.kubectl(&["create", "namespace", "team-a"]).await.fails();
    assert!(dup.contains("AlreadyExists") && dup.contains("namespaces \"team-a\" already exists"), "{dup}");
    // expose a deployment
    assert_eq!(c.kubectl(&["expose", "deployment", "web", "--port=80"]).await.ok().trim(), "service/web exposed");
    let sel = c.kubectl(&["get", "svc", "web", "-o", "jsonpath={.spec.selector.app}"]).await.ok();
    assert_eq!(sel, "web");
}

async fn apply_client_side_three_way_merge(c: &TestCluster) {
    let f = c.dir.path().join("deploy.yaml");
    std::fs::write(&f, DEPLOY_V1).unwrap();
    let fp = f.display().to_string();
    assert_eq!(c.kubectl(&["apply", "-f", &fp]).await.ok().trim(), "deployment.apps/web created");
    assert_eq!(c.kubectl(&["apply", "-f", &fp]).await.ok().trim(), "deployment.apps/web unchanged");
    let gen1 = c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.metadata.generation}"]).await.ok();
    assert_eq!(gen1, "1");
    // someone else adds a label; apply must keep it (three-way merge) while dropping env
    c.kubectl(&["label", "deploy", "web", "team=blue"]).await.ok();
    let v2 = DEPLOY_V1.replace("replicas: 2", "replicas: 3").replace("nginx:1.25", "nginx:1.26").replace("        env:\n        - {name: A, value: \"1\"}\n", "");
    std::fs::write(&f, v2).unwrap();
    assert_eq!(c.kubectl(&["apply", "-f", &fp]).await.ok().trim(), "deployment.apps/web configured");
    let got = c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.metadata.labels.team} {.spec.template.spec.containers[0].env} {.metadata.generation}"]).await.ok();
    assert_eq!(got, "3 nginx:1.26 blue  2");
    // diff against a changed manifest: exit 1 with a diff
    let v3 = DEPLOY_V1.replace("replicas: 2", "replicas: 5");
    std::fs::write(&f, v3).unwrap();
    let diff = c.kubectl(&["diff", "-f", &fp]).await;
    assert_eq!(diff.status.code(), Some(1), "{}", String::from_utf8_lossy(&diff.stderr));
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(text.contains("-  replicas: 3") && text.contains("+  replicas: 5"), "{text}");
    // dry-run did not persist
    assert_eq!(c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]).await.ok(), "3");
}

async fn apply_server_side_and_conflicts(c: &TestCluster) {
    let f = c.dir.path().join("deploy.yaml");
    std::fs::write(&f, DEPLOY_V1).unwrap();
    let fp = f.display().to_string();
    assert_eq!(c.kubectl(&["apply", "--server-side", "-f", &fp]).await.ok().trim(), "deployment.apps/web serverside-applied");
    let mf = c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.metadata.managedFields[0].manager} {.metadata.managedFields[0].operation}"]).await.ok();
    assert_eq!(mf, "kubectl Apply");
    // another manager changes replicas; applying a different value conflicts
    c.kubectl(&["scale", "deploy", "web", "--replicas=4"]).await.ok();
    std::fs::write(&f, DEPLOY_V1.replace("replicas: 2", "replicas: 6")).unwrap();
    let err = c.kubectl(&["apply", "--server-side", "--field-manager=ci", "-f", &fp]).await.fails();
    assert!(err.contains("conflict") && err.contains(".spec.replicas"), "{err}");
    c.kubectl(&["apply", "--server-side", "--field-manager=ci", "--force-conflicts", "-f", &fp]).await.ok();
    assert_eq!(c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]).await.ok(), "6");
}

async fn replace_patch_label_annotate_scale(c: &TestCluster) {
    let f = c.dir.path().join("deploy.yaml");
    std::fs::write(&f, DEPLOY_V1).unwrap();
    let fp = f.display().to_string();
    c.kubectl(&["create", "-f", &fp]).await.ok();
    std::fs::write(&f, DEPLOY_V1.replace("nginx:1.25", "nginx:1.27")).unwrap();
    assert_eq!(c.kubectl(&["replace", "-f", &fp]).await.ok().trim(), "deployment.apps/web replaced");
    assert_eq!(c.kubectl(&["patch", "deploy", "web", "-p", r#"{"spec":{"replicas":4}}"#]).await.ok().trim(), "deployment.apps/web patched");
    c.kubectl(&["patch", "deploy", "web", "--type=merge", "-p", r#"{"metadata":{"labels":{"tier":"front"}}}"#]).await.ok();
    c.kubectl(&["patch", "deploy", "web", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"nginx:1.28"}]"#]).await.ok();
    let got = c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas} {.metadata.labels.tier} {.spec.template.spec.containers[0].image}"]).await.ok();
    assert_eq!(got, "4 front nginx:1.28");
    assert_eq!(c.kubectl(&["label", "deploy", "web", "env=prod"]).await.ok().trim(), "deployment.apps/web labeled");
    let clash = c.kubectl(&["label", "deploy", "web", "env=dev"]).await.fails();
    assert!(clash.contains("already has a value (prod)"), "{clash}");
    c.kubectl(&["label", "deploy", "web", "env=dev", "--overwrite"]).await.ok();
    c.kubectl(&["label", "deploy", "web", "tier-"]).await.ok();
    assert_eq!(c.kubectl(&["annotate", "deploy", "web", "note=hello"]).await.ok().trim(), "deployment.apps/web annotated");
    c.kubectl(&["annotate", "deploy", "web", "note-"]).await.ok();
    let got = c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.metadata.labels.env}|{.metadata.labels.tier}|{.metadata.annotations.note}"]).await.ok();
    assert_eq!(got, "dev||");
    assert_eq!(c.kubectl(&["scale", "deploy", "web", "--replicas=1"]).await.ok().trim(), "deployment.apps/web scaled");
    assert_eq!(c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]).await.ok(), "1");
    // edit with a scripted editor
    let editor = c.dir.path().join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/image: nginx:1.28/image: nginx:1.29/' \"$1\"\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&editor).status().unwrap();
    let ed = editor.display().to_string();
    let out = c.kubectl_env(&["edit", "deploy", "web"], &[("EDITOR", &ed), ("KUBE_EDITOR", &ed)]).await.ok();
    assert_eq!(out.trim(), "deployment.apps/web edited");
    assert_eq!(c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]).await.ok(), "nginx:1.29");
}

async fn get_output_formats_and_selectors(c: &TestCluster) {
    c.kubectl(&["run", "a", "--image=nginx", "--labels=app=x,tier=front"]).await.ok();
    c.kubectl(&["run", "b", "--image=nginx", "--labels=app=y"]).await.ok();
    let names = c.kubectl(&["get", "pods", "-o", "name"]).await.ok();
    assert_eq!(names, "pod/a\npod/b\n");
    let l = c.kubectl(&["get", "pods", "-l", "app=x", "-o", "name"]).await.ok();
    assert_eq!(l, "pod/a\n");
    let l = c.kubectl(&["get", "pods", "-l", "app in (x,y),tier!=front", "-o", "name"]).await.ok();
    assert_eq!(l, "pod/b\n");
    let f = c.kubectl(&["get", "pods", "--field-selector=metadata.name=b", "-o", "name"]).await.ok();
    assert_eq!(f, "pod/b\n");
    let f = c.kubectl(&["get", "pods", "--field-selector=status.phase=Pending", "-o", "name"]).await.ok();
    assert_eq!(f, "pod/a\npod/b\n");
    let bad = c.kubectl(&["get", "pods", "--field-selector=spec.bogus=1"]).await.fails();
    assert!(bad.contains("field label not supported: spec.bogus"), "{bad}");
    let sl = c.kubectl(&["get", "pods", "--show-labels"]).await.ok();
    assert!(sl.contains("LABELS") && sl.contains("app=x,tier=front"), "{sl}");
    let all = c.kubectl(&["get", "pods", "-A"]).await.ok();
    assert!(all.starts_with("NAMESPACE"), "{all}");
    let cc = c.kubectl(&["get", "pods", "-o", "custom-columns=N:.metadata.name,I:.spec.containers[0].image"]).await.ok();
    let rows: Vec<Vec<&str>> = cc.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows, vec![vec!["N", "I"], vec!["a", "nginx"], vec!["b", "nginx"]], "{cc}");
    let sorted = c.kubectl(&["get", "pods", "--sort-by=.metadata.name", "-o", "name"]).await.ok();
    assert_eq!(sorted, "pod/a\npod/b\n");
    let j = c.kubectl(&["get", "pods", "-o", "json"]).await.ok();
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["kind"], "List");
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    let chunk = c.kubectl(&["get", "pods", "--chunk-size=1", "-o", "name"]).await.ok();
    assert_eq!(chunk, "pod/a\npod/b\n");
    let ev = c.kubectl(&["get", "events"]).await;
    assert!(ev.status.success(), "{}", String::from_utf8_lossy(&ev.stderr));
    // config set-context --namespace then a namespaced get
    c.kubectl(&["create", "namespace", "other"]).await.ok();
    c.kubectl(&["config", "set-context", "--current", "--namespace=other"]).await.ok();
    let none = c.kubectl(&["get", "pods"]).await;
    assert!(String::from_utf8_lossy(&none.stderr).contains("No resources found in other namespace."), "{:?}", none);
    c.kubectl(&["config", "set-context", "--current", "--namespace=default"]).await.ok();
}

async fn delete_by_file_selector_and_all(c: &TestCluster) {
    let f = c.dir.path().join("deploy.yaml");
    std::fs::write(&f, DEPLOY_V1).unwrap();
    let fp = f.display().to_string();
    c.kubectl(&["create", "-f", &fp]).await.ok();
    assert_eq!(c.kubectl(&["delete", "-f", &fp]).await.ok().trim(), "deployment.apps \"web\" deleted");
    c.kubectl(&["create", "configmap", "one", "--from-literal=a=1"]).await.ok();
    c.kubectl(&["create", "configmap", "two", "--from-literal=a=2"]).await.ok();
    c.kubectl(&["label", "cm", "one", "gone=yes"]).await.ok();
    assert_eq!(c.kubectl(&["delete", "cm", "-l", "gone=yes"]).await.ok().trim(), "configmap \"one\" deleted");
    let del = c.kubectl(&["delete", "cm", "--all"]).await.ok();
    assert!(del.contains("configmap \"two\" deleted"), "{del}");
    // orphaning is recorded for the garbage collector
    c.kubectl(&["create", "-f", &fp]).await.ok();
    let o = c.kubectl(&["delete", "deploy", "web", "--cascade=orphan", "--wait=false"]).await.ok();
    assert_eq!(o.trim(), "deployment.apps \"web\" deleted");
    let fin = c.kubectl(&["get", "deploy", "web", "-o", "jsonpath={.metadata.finalizers}"]).await.ok();
    assert!(fin.contains("orphan"), "{fin}");
    // wait --for=delete on an object that goes away
    c.kubectl(&["run", "w", "--image=nginx"]).await.ok();
    let (wait, del) = tokio::join!(c.kubectl(&["wait", "--for=delete", "pod/w", "--timeout=30s"]), async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        c.kubectl(&["delete", "pod", "w", "--wait=false"]).await
    });
    del.ok();
    assert!(wait.ok().contains("pod/w condition met"));
}

async fn bad_input_gets_clear_errors(c: &TestCluster) {
    let f = c.dir.path().join("bad.yaml");
    std::fs::write(&f, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers:\n  - name: c\n").unwrap();
    let err = c.kubectl(&["create", "-f", &f.display().to_string()]).await.fails();
    assert!(err.contains("is invalid") && err.contains("metadata.name: Invalid value: \"Bad_Name\"") && err.contains("spec.containers[0].image: Required value"), "{err}");
    std::fs::write(&f, "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\nbogus: 1\n").unwrap();
    let err = c.kubectl(&["create", "-f", &f.display().to_string()]).await.fails();
    assert!(err.contains("unknown field \"bogus\""), "{err}");
    let err = c.kubectl(&["get", "frobnicators"]).await.fails();
    assert!(err.contains("the server doesn't have a resource type \"frobnicators\""), "{err}");
    // stale resourceVersion on replace
    c.kubectl(&["create", "configmap", "cm", "--from-literal=a=1"]).await.ok();
    let y = c.kubectl(&["get", "cm", "cm", "-o", "yaml"]).await.ok();
    c.kubectl(&["label", "cm", "cm", "x=y"]).await.ok();
    std::fs::write(&f, y).unwrap();
    let err = c.kubectl(&["replace", "-f", &f.display().to_string()]).await.fails();
    assert!(err.contains("Operation cannot be fulfilled on configmaps \"cm\": the object has been modified"), "{err}");
}
