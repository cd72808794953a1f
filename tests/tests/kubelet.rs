//! The kubelet against a real containerd (private root, state and socket, started by the test)
//! and a real API server: pods really run through CRI, runc and CNI. Each scenario gets its own
//! cluster, containerd and in-process kubelet; scenarios run one at a time because their pods
//! share the host's `cni0` bridge.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::PostParams;
use kube::Api;
use serde_json::json;
use tests::node_env::Env;
use tests::OutputExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn container_status(p: &Pod, name: &str) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
        .cloned()
}

fn waiting_reason(p: &Pod, name: &str) -> Option<String> {
    container_status(p, name)?.state?.waiting?.reason
}

/// One HTTP/1.0 GET. A container without a readiness probe is ready once it has started, which
/// can be before its server listens (nginx on a cold page cache), so a refused connection is
/// retried for a few seconds, as a client polling a fresh pod would.
async fn http_get(addr: &str, path: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut s = loop {
        let c = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .expect("connect timeout");
        match c {
            Err(e)
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            c => break c.expect("connect"),
        }
    };
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .expect("read timeout")
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_run_serve_and_report_status() {
    let env = Env::start().await;
    env.create(
        "default",
        json!({"metadata": {"name": "web", "labels": {"app": "web"}},
               "spec": {"containers": [{"name": "nginx", "image": "nginx",
                          "ports": [{"containerPort": 80}]}]}}),
    )
    .await;
    let p = env
        .wait_pod("default", "web", 60, |p| {
            phase(p) == "Running" && container_status(p, "nginx").is_some_and(|c| c.ready)
        })
        .await;
    let st = p.status.clone().unwrap();
    let ip = st.pod_ip.clone().expect("pod IP");
    assert!(ip.starts_with("10.244.77."), "{ip}");
    assert_eq!(st.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(st.qos_class.as_deref(), Some("BestEffort"));
    let cs = container_status(&p, "nginx").unwrap();
    assert!(cs.container_id.unwrap().starts_with("containerd://"));
    assert_eq!(cs.restart_count, 0);
    assert!(!cs.image_id.is_empty());
    let conds = st.conditions.unwrap();
    for t in [
        "Initialized",
        "Ready",
        "ContainersReady",
        "PodReadyToStartContainers",
    ] {
        assert!(
            conds.iter().any(|c| c.type_ == t && c.status == "True"),
            "{t} in {conds:?}"
        );
    }
    let body = http_get(&format!("{ip}:80"), "/").await;
    assert!(body.contains("Welcome to nginx"), "{body}");

    // Pods' outbound masquerade: one chain for the node's CIDR, no per-pod CNI chain.
    let nat = std::process::Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .unwrap();
    let nat = String::from_utf8_lossy(&nat.stdout);
    let cidr = kubelet::cni::Cidr::parse("10.244.77.0/24").unwrap();
    let chain = kubelet::masquerade::chain(&cidr);
    assert!(nat.contains(&format!("-A {chain} -j MASQUERADE")), "{nat}");
    assert!(
        nat.lines()
            .any(|l| l.starts_with("-A POSTROUTING -s 10.244.77.0/24")
                && l.ends_with(&format!("-j {chain}"))),
        "{nat}"
    );
    assert!(
        !nat.contains(&format!("-s {ip}/32")),
        "per-pod masquerade: {nat}"
    );

    // kubectl shows it like upstream.
    let out = env
        .cluster
        .kubectl(&["get", "pod", "web", "-o", "wide"])
        .await
        .ok();
    assert!(
        out.contains("Running") && out.contains(&ip) && out.contains(&env.node),
        "{out}"
    );
    let out = env.cluster.kubectl(&["describe", "pod", "web"]).await.ok();
    for want in [
        "Successfully assigned",
        "Created container nginx",
        "Started container nginx",
    ] {
        if want == "Successfully assigned" {
            continue; // bound directly through spec.nodeName: no scheduler event
        }
        assert!(out.contains(want), "{want} missing in describe:\n{out}");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies_decide_phase_and_exit_codes() {
    let env = Env::start().await;
    for (name, policy, cmd) in [
        ("ok", "Never", "exit 0"),
        ("bad", "Never", "exit 3"),
        (
            "retry",
            "OnFailure",
            "[ -f /tmp/x ] || { touch /tmp/x; exit 1; }",
        ),
    ] {
        env.create(
            "default",
            json!({"metadata": {"name": name},
                   "spec": {"restartPolicy": policy,
                            "containers": [{"name": "c", "image": "busybox",
                                            "imagePullPolicy": "IfNotPresent",
                                            "command": ["sh", "-c", cmd]}]}}),
        )
        .await;
    }
    let ok = env
        .wait_pod("default", "ok", 60, |p| phase(p) == "Succeeded")
        .await;
    let t = container_status(&ok, "c")
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    let bad = env
        .wait_pod("default", "bad", 60, |p| phase(p) == "Failed")
        .await;
    let t = container_status(&bad, "c")
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));
    // OnFailure: the first run fails; /tmp is the container's own, so the restarted container
    // fails again and the pod keeps restarting with back-off.
    let retry = env
        .wait_pod("default", "retry", 60, |p| {
            container_status(p, "c").is_some_and(|c| c.restart_count >= 1)
        })
        .await;
    assert_eq!(phase(&retry), "Running");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_container_backs_off() {
    let env = Env::start().await;
    env.create(
        "default",
        json!({"metadata": {"name": "crash"},
               "spec": {"containers": [{"name": "c", "image": "busybox",
                          "command": ["sh", "-c", "echo boom; exit 1"]}]}}),
    )
    .await;
    let p = env
        .wait_pod("default", "crash", 60, |p| {
            waiting_reason(p, "c").as_deref() == Some("CrashLoopBackOff")
        })
        .await;
    let cs = container_status(&p, "c").unwrap();
    let msg = cs.state.unwrap().waiting.unwrap().message.unwrap();
    assert!(
        msg.starts_with("back-off 10s restarting failed container=c pod=crash_default("),
        "{msg}"
    );
    let last = cs.last_state.unwrap().terminated.unwrap();
    assert_eq!(last.exit_code, 1);
    // After the 10 s back-off it restarts once more and then waits 20 s.
    let p = env
        .wait_pod("default", "crash", 40, |p| {
            container_status(p, "c").is_some_and(|c| c.restart_count >= 2)
                && waiting_reason(p, "c").as_deref() == Some("CrashLoopBackOff")
        })
        .await;
    let msg = container_status(&p, "c")
        .unwrap()
        .state
        .unwrap()
        .waiting
        .unwrap()
        .message
        .unwrap();
    assert!(msg.starts_with("back-off 20s"), "{msg}");
    let out = env.cluster.kubectl(&["get", "pod", "crash"]).await.ok();
    assert!(out.contains("CrashLoopBackOff"), "{out}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_from_config_map_and_missing_keys() {
    let env = Env::start().await;
    env.create(
        "default",
        json!({"metadata": {"name": "envy"},
               "spec": {"restartPolicy": "Never",
                        "initContainers": [{"name": "first", "image": "busybox",
                            "command": ["sh", "-c", "echo init-ran"]}],
                        "containers": [{"name": "c", "image": "busybox",
                            "command": ["sh", "-c", "echo $(GREETING) $COLOR $MY_NODE; test \"$COLOR\" = blue"],
                            "env": [
                              {"name": "GREETING", "value": "hello"},
                              {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "color"}}},
                              {"name": "MY_NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
                            ]}]}}),
    )
    .await;
    let p = env
        .wait_pod("default", "envy", 60, |p| {
            waiting_reason(p, "c").as_deref() == Some("CreateContainerConfigError")
        })
        .await;
    let msg = container_status(&p, "c")
        .unwrap()
        .state
        .unwrap()
        .waiting
        .unwrap()
        .message;
    assert_eq!(msg.as_deref(), Some("configmap \"cfg\" not found"));
    let init = p.status.unwrap().init_container_statuses.unwrap();
    assert_eq!(
        init[0]
            .state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code,
        0,
        "init container ran first"
    );
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "cfg"}, "data": {"color": "blue"}}))
            .unwrap(),
    )
    .await
    .unwrap();
    env.wait_pod("default", "envy", 30, |p| phase(p) == "Succeeded")
        .await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_terminates_within_grace_and_restart_adopts() {
    let mut env = Env::start().await;
    env.create(
        "default",
        json!({"metadata": {"name": "sleeper"},
               "spec": {"terminationGracePeriodSeconds": 5,
                        "containers": [{"name": "c", "image": "busybox",
                            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}]}}),
    )
    .await;
    let p = env
        .wait_pod("default", "sleeper", 60, |p| phase(p) == "Running")
        .await;
    let id = container_status(&p, "c").unwrap().container_id.unwrap();

    // A restarted kubelet adopts the running container instead of recreating it.
    env.stop_kubelet().await;
    env.start_kubelet(None).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let p = env.pods("default").get("sleeper").await.unwrap();
    assert_eq!(container_status(&p, "c").unwrap().container_id.unwrap(), id);
    assert_eq!(container_status(&p, "c").unwrap().restart_count, 0);

    let started = std::time::Instant::now();
    env.cluster
        .kubectl(&["delete", "pod", "sleeper", "--wait=true", "--timeout=30s"])
        .await
        .ok();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // Nothing of the pod is left in the runtime.
    let tasks = env
        .containerd
        .ctr(&["-n", "k8s.io", "tasks", "ls", "-q"])
        .unwrap();
    assert!(tasks.trim().is_empty(), "{tasks}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_previous_and_oom() {
    let env = Env::start().await;
    env.create(
        "default",
        json!({"metadata": {"name": "talker"},
               "spec": {"containers": [{"name": "c", "image": "busybox",
                  "command": ["sh", "-c", "echo run-$(cat /proc/uptime | cut -d' ' -f1); for i in 1 2 3; do echo line $i; sleep 0.3; done; exit 2"]}]}}),
    )
    .await;
    env.wait_pod("default", "talker", 60, |p| {
        container_status(p, "c").is_some_and(|c| c.restart_count >= 1)
    })
    .await;
    let out = env
        .cluster
        .kubectl(&["logs", "talker", "--previous"])
        .await
        .ok();
    assert!(out.contains("line 3"), "{out}");
    let out = env
        .cluster
        .kubectl(&["logs", "talker", "--tail=1", "--timestamps", "--previous"])
        .await
        .ok();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("Z line 3"), "{out}");

    // -f ends when the container exits.
    env.create(
        "default",
        json!({"metadata": {"name": "follow"},
               "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox",
                  "command": ["sh", "-c", "for i in 1 2 3 4; do echo tick $i; sleep 0.5; done"]}]}}),
    )
    .await;
    env.wait_pod("default", "follow", 60, |p| phase(p) == "Running")
        .await;
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        env.cluster.kubectl(&["logs", "-f", "follow"]),
    )
    .await
    .expect("logs -f returns when the container ends")
    .ok();
    assert!(out.contains("tick 1") && out.contains("tick 4"), "{out}");

    // Over its memory limit: OOMKilled.
    env.create(
        "default",
        json!({"metadata": {"name": "hog"},
               "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox",
                  "command": ["sh", "-c", "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo survived"],
                  "resources": {"limits": {"memory": "16Mi"}}}]}}),
    )
    .await;
    let p = env
        .wait_pod("default", "hog", 60, |p| phase(p) == "Failed")
        .await;
    let t = container_status(&p, "c")
        .unwrap()
        .state
        .unwrap()
        .terminated
        .unwrap();
    assert_eq!(t.reason.as_deref(), Some("OOMKilled"), "{t:?}");
    assert_eq!(t.exit_code, 137);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_restart_and_gate_readiness() {
    let env = Env::start().await;
    // kuard: /healthy fails after ?fail=1, so liveness restarts it; /ready gates readiness.
    env.create(
        "default",
        json!({"metadata": {"name": "kuard"},
               "spec": {"containers": [{"name": "kuard", "image": "gcr.io/kuar-demo/kuard-amd64:blue",
                  "ports": [{"name": "http", "containerPort": 8080}],
                  "livenessProbe": {"httpGet": {"path": "/healthy", "port": "http"},
                                    "periodSeconds": 1, "failureThreshold": 2},
                  "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080},
                                     "periodSeconds": 1, "failureThreshold": 1}}]}}),
    )
    .await;
    let p = env
        .wait_pod("default", "kuard", 60, |p| {
            container_status(p, "kuard").is_some_and(|c| c.ready)
        })
        .await;
    let ip = p.status.unwrap().pod_ip.unwrap();
    let r = http_get(&format!("{ip}:8080"), "/ready?fail=1").await;
    assert!(r.contains("HTTP/1."), "{r}");
    env.wait_pod("default", "kuard", 30, |p| {
        container_status(p, "kuard").is_some_and(|c| !c.ready)
            && p.status
                .as_ref()
                .unwrap()
                .conditions
                .as_ref()
                .unwrap()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "False")
    })
    .await;
    http_get(&format!("{ip}:8080"), "/healthy?fail=1").await;
    let p = env
        .wait_pod("default", "kuard", 60, |p| {
            container_status(p, "kuard").is_some_and(|c| c.restart_count >= 1 && c.ready)
        })
        .await;
    assert_eq!(phase(&p), "Running");
    let out = env
        .cluster
        .kubectl(&["describe", "pod", "kuard"])
        .await
        .ok();
    assert!(
        out.contains("Liveness probe failed: HTTP probe failed with statuscode: 500"),
        "{out}"
    );
    assert!(
        out.contains("failed liveness probe, will be restarted"),
        "{out}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_map_volume_updates_in_place() {
    let env = Env::start().await;
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(
            json!({"metadata": {"name": "site"}, "data": {"index.html": "v1"}}),
        )
        .unwrap(),
    )
    .await
    .unwrap();
    env.create(
        "default",
        json!({"metadata": {"name": "site"},
               "spec": {"containers": [{"name": "web", "image": "busybox",
                  "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                  "volumeMounts": [{"name": "www", "mountPath": "/www"}]}],
                        "volumes": [{"name": "www", "configMap": {"name": "site"}}]}}),
    )
    .await;
    let p = env
        .wait_pod("default", "site", 60, |p| phase(p) == "Running")
        .await;
    let ip = p.status.unwrap().pod_ip.unwrap();
    let body = http_get(&format!("{ip}:8080"), "/index.html").await;
    assert!(body.ends_with("v1"), "{body}");
    cms.patch(
        "site",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"data": {"index.html": "v2"}})),
    )
    .await
    .unwrap();
    // The kubelet resyncs the pod and rewrites the files atomically; the container keeps running.
    let mut last = String::new();
    for _ in 0..150 {
        last = http_get(&format!("{ip}:8080"), "/index.html").await;
        if last.ends_with("v2") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(last.ends_with("v2"), "{last}");
    let p = env.pods("default").get("site").await.unwrap();
    assert_eq!(container_status(&p, "web").unwrap().restart_count, 0);
    env.stop().await;
}
