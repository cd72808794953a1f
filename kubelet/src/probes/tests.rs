//! Probe workers under paused time with a scripted exec runtime; network probes and hooks
//! against local listeners in real time.

use std::collections::VecDeque;
use std::convert::Infallible;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use k8s_openapi::api::core::v1::{
    ContainerPort, ExecAction, GRPCAction, HTTPHeader, PodSpec, SleepAction, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::cri::fake::FakeRuntime;
use crate::cri::{v1, CriResult};

/// FakeRuntime with exec results scripted per command: `script("live", [1, 1, 0])` makes the
/// next ExecSync of `["live"]` exit 1, then 1, then 0 for ever after (the last one repeats).
#[derive(Default)]
struct ScriptedExec {
    inner: FakeRuntime,
    scripts: Mutex<HashMap<String, VecDeque<(i32, &'static str)>>>,
    calls: Mutex<Vec<String>>,
}

impl ScriptedExec {
    fn script(&self, cmd: &str, results: &[(i32, &'static str)]) {
        self.scripts
            .lock()
            .unwrap()
            .insert(cmd.to_string(), results.iter().copied().collect());
    }
    fn calls(&self, cmd: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == cmd)
            .count()
    }
}

macro_rules! delegate {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        $(fn $name(&self, $($arg: $ty),*) -> BoxFuture<'_, CriResult<$ret>> {
            self.inner.$name($($arg),*)
        })*
    };
}

impl Runtime for ScriptedExec {
    delegate! {
        version() -> v1::VersionResponse;
        status() -> v1::StatusResponse;
        run_pod_sandbox(config: v1::PodSandboxConfig, handler: String) -> String;
        stop_pod_sandbox(id: String) -> ();
        remove_pod_sandbox(id: String) -> ();
        pod_sandbox_status(id: String) -> v1::PodSandboxStatus;
        list_pod_sandbox(filter: Option<v1::PodSandboxFilter>) -> Vec<v1::PodSandbox>;
        create_container(sandbox: String, config: v1::ContainerConfig, sc: v1::PodSandboxConfig) -> String;
        start_container(id: String) -> ();
        stop_container(id: String, timeout: i64) -> ();
        remove_container(id: String) -> ();
        list_containers(filter: Option<v1::ContainerFilter>) -> Vec<v1::Container>;
        container_status(id: String) -> v1::ContainerStatus;
        exec(req: v1::ExecRequest) -> String;
        attach(req: v1::AttachRequest) -> String;
        port_forward(sandbox: String, ports: Vec<i32>) -> String;
        list_container_stats() -> Vec<v1::ContainerStats>;
        image_status(image: String) -> Option<v1::Image>;
        pull_image(image: String, auth: Option<v1::AuthConfig>, sc: Option<v1::PodSandboxConfig>) -> String;
        list_images() -> Vec<v1::Image>;
        remove_image(image: String) -> ();
        image_fs_info() -> v1::ImageFsInfoResponse;
    }

    fn exec_sync(
        &self,
        _id: String,
        cmd: Vec<String>,
        _timeout: i64,
    ) -> BoxFuture<'_, CriResult<v1::ExecSyncResponse>> {
        let key = cmd.join(" ");
        self.calls.lock().unwrap().push(key.clone());
        let mut scripts = self.scripts.lock().unwrap();
        let (code, out) = match scripts.get_mut(&key) {
            Some(q) if q.len() > 1 => q.pop_front().unwrap(),
            Some(q) => q.front().copied().unwrap_or((0, "")),
            None => (0, ""),
        };
        let r = v1::ExecSyncResponse {
            stdout: out.as_bytes().to_vec(),
            stderr: vec![],
            exit_code: code,
        };
        Box::pin(futures::future::ready(Ok(r)))
    }
}

/// What the fake API saw of Events: created ones as (reason, message, fieldPath), and the
/// count of aggregation patches.
#[derive(Default)]
struct SeenEvents {
    created: Vec<(String, String, String)>,
    patches: usize,
}

type Events = Arc<Mutex<SeenEvents>>;

/// An EventRecorder writing to a fake API (a tower service).
fn recorder() -> (EventRecorder, Events) {
    let events: Events = Default::default();
    let seen = events.clone();
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let seen = seen.clone();
        async move {
            let post = req.method() == http::Method::POST;
            let body = req.into_body().collect().await?.to_bytes();
            let mut seen = seen.lock().unwrap();
            if !post {
                seen.patches += 1;
            } else if let Ok(e) = serde_json::from_slice::<k8s_openapi::api::core::v1::Event>(&body)
            {
                seen.created.push((
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                    e.involved_object.field_path.unwrap_or_default(),
                ));
            }
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                http::Response::builder()
                    .status(201)
                    .body(Full::new(body))
                    .unwrap(),
            )
        }
    });
    let client = kube::Client::new(svc, "default");
    let sink =
        component_base::events::EventSink::start(client, "node1".into(), CancellationToken::new());
    (sink.recorder("kubelet"), events)
}

fn exec_probe(cmd: &str) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: Some(vec![cmd.to_string()]),
        }),
        ..Default::default()
    }
}

fn pod_with(container: Container) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("u1".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn web(f: impl FnOnce(&mut Container)) -> Container {
    let mut c = Container {
        name: "web".into(),
        ..Default::default()
    };
    f(&mut c);
    c
}

fn running(id: &str) -> Vec<RunningContainer> {
    vec![RunningContainer {
        name: "web".into(),
        id: id.into(),
        started_at: SystemTime::now(),
    }]
}

struct Harness {
    rt: Arc<ScriptedExec>,
    pm: Arc<ProbeManager>,
    rx: mpsc::UnboundedReceiver<String>,
    events: Events,
}

fn harness() -> Harness {
    let rt = Arc::new(ScriptedExec::default());
    let (recorder, events) = recorder();
    let (tx, rx) = mpsc::unbounded_channel();
    let pm = ProbeManager::new(rt.clone(), recorder, tx);
    Harness { rt, pm, rx, events }
}

/// Let spawned tasks run, then advance the paused clock by `secs` (stepwise, so every timer
/// due on the way fires in order).
async fn advance(secs: f64) {
    let mut left = Duration::from_secs_f64(secs);
    let step = Duration::from_millis(100);
    while !left.is_zero() {
        let d = left.min(step);
        tokio::time::advance(d).await;
        left -= d;
        settle().await;
    }
    settle().await;
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn notified(rx: &mut mpsc::UnboundedReceiver<String>) -> usize {
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    n
}

#[tokio::test(start_paused = true)]
async fn readiness_waits_initial_delay_then_turns_ready() {
    let mut h = harness();
    let pod = pod_with(web(|c| {
        c.readiness_probe = Some(Probe {
            initial_delay_seconds: Some(5),
            ..exec_probe("ready")
        })
    }));
    h.pm.sync_pod(&pod, &running("c1"), Some("10.0.0.1"));
    assert!(
        !h.pm.is_ready("u1", "web"),
        "not ready before the first success"
    );
    assert!(h.pm.is_started("u1", "web"));
    advance(4.5).await;
    assert_eq!(h.rt.calls("ready"), 0, "no probe inside the initial delay");
    advance(1.0).await;
    assert_eq!(h.rt.calls("ready"), 1);
    assert!(h.pm.is_ready("u1", "web"));
    assert_eq!(notified(&mut h.rx), 1);
    // Default period is 10 s.
    advance(9.0).await;
    assert_eq!(h.rt.calls("ready"), 1);
    advance(1.5).await;
    assert_eq!(h.rt.calls("ready"), 2);
    assert_eq!(notified(&mut h.rx), 0, "unchanged result: no notification");
}

#[tokio::test(start_paused = true)]
async fn container_without_readiness_probe_is_ready_while_running() {
    let h = harness();
    let pod = pod_with(web(|_| {}));
    assert!(!h.pm.is_ready("u1", "web"));
    h.pm.sync_pod(&pod, &running("c1"), None);
    assert!(h.pm.is_ready("u1", "web"));
    h.pm.sync_pod(&pod, &[], None);
    assert!(!h.pm.is_ready("u1", "web"), "not running: not ready");
    assert!(!h.pm.is_started("u1", "web"));
}

#[tokio::test(start_paused = true)]
async fn readiness_flips_only_after_thresholds() {
    let mut h = harness();
    h.rt.script(
        "ready",
        &[(0, ""), (1, "no"), (1, "no"), (1, "no"), (0, ""), (0, "")],
    );
    let pod = pod_with(web(|c| {
        c.readiness_probe = Some(Probe {
            period_seconds: Some(1),
            success_threshold: Some(2),
            failure_threshold: Some(3),
            ..exec_probe("ready")
        })
    }));
    h.pm.sync_pod(&pod, &running("c1"), None);
    settle().await;
    // One success is below successThreshold 2.
    assert_eq!(h.rt.calls("ready"), 1);
    assert!(!h.pm.is_ready("u1", "web"));
    advance(1.0).await; // fail 1
    advance(1.0).await; // fail 2
    assert!(!h.pm.is_ready("u1", "web"));
    advance(1.0).await; // fail 3: result Failure (already false: no change)
    advance(1.0).await; // success 1
    assert!(!h.pm.is_ready("u1", "web"));
    advance(1.0).await; // success 2
    assert!(h.pm.is_ready("u1", "web"));
    assert_eq!(notified(&mut h.rx), 1);
}

#[tokio::test(start_paused = true)]
async fn liveness_failures_request_a_restart_and_record_unhealthy_events() {
    let mut h = harness();
    h.rt.script("live", &[(0, ""), (1, "boom")]);
    let pod = pod_with(web(|c| {
        c.liveness_probe = Some(Probe {
            period_seconds: Some(2),
            termination_grace_period_seconds: Some(7),
            ..exec_probe("live")
        })
    }));
    h.pm.sync_pod(&pod, &running("c1"), None);
    settle().await;
    advance(2.0).await; // failure 1
    advance(2.0).await; // failure 2
    assert_eq!(h.pm.take_restart_request("u1", "c1"), None);
    assert_eq!(notified(&mut h.rx), 0);
    advance(2.0).await; // failure 3 = failureThreshold
    assert_eq!(notified(&mut h.rx), 1);
    assert_eq!(
        h.pm.take_restart("u1", "c1"),
        Some(RestartRequest {
            message: "Container web failed liveness probe, will be restarted".into(),
            grace_period: Some(7),
        })
    );
    assert_eq!(h.pm.take_restart_request("u1", "c1"), None, "consumed");
    // Probing stops for this instance.
    let calls = h.rt.calls("live");
    advance(10.0).await;
    assert_eq!(h.rt.calls("live"), calls);
    settle().await;
    {
        let events = h.events.lock().unwrap();
        assert_eq!(
            events.created,
            vec![(
                "Unhealthy".to_string(),
                "Liveness probe failed: boom".to_string(),
                "spec.containers{web}".to_string()
            )]
        );
        assert_eq!(events.patches, 2, "repeats aggregate into count");
    }
    // A new instance is probed afresh.
    h.pm.sync_pod(&pod, &running("c2"), None);
    settle().await;
    assert_eq!(h.rt.calls("live"), calls + 1);
}

#[tokio::test(start_paused = true)]
async fn startup_probe_gates_liveness_and_readiness() {
    let mut h = harness();
    h.rt.script("start", &[(1, ""), (1, ""), (0, "")]);
    let pod = pod_with(web(|c| {
        c.startup_probe = Some(Probe {
            period_seconds: Some(1),
            failure_threshold: Some(10),
            ..exec_probe("start")
        });
        c.liveness_probe = Some(Probe {
            period_seconds: Some(1),
            ..exec_probe("live")
        });
        c.readiness_probe = Some(Probe {
            period_seconds: Some(1),
            ..exec_probe("ready")
        });
    }));
    h.pm.sync_pod(&pod, &running("c1"), None);
    advance(1.5).await;
    assert!(!h.pm.is_started("u1", "web"));
    assert!(!h.pm.is_ready("u1", "web"));
    assert_eq!(h.rt.calls("live") + h.rt.calls("ready"), 0);
    advance(1.0).await; // third startup probe succeeds
    assert!(h.pm.is_started("u1", "web"));
    assert!(h.pm.is_ready("u1", "web"));
    assert!(h.rt.calls("live") >= 1);
    assert!(notified(&mut h.rx) >= 2, "started and ready");
    let startups = h.rt.calls("start");
    advance(5.0).await;
    assert_eq!(
        h.rt.calls("start"),
        startups,
        "startup probing ends once passed"
    );
}

#[tokio::test(start_paused = true)]
async fn failed_startup_probe_restarts_unless_policy_never() {
    let mut h = harness();
    h.rt.script("start", &[(1, "")]);
    let mut pod = pod_with(web(|c| {
        c.startup_probe = Some(Probe {
            period_seconds: Some(1),
            failure_threshold: Some(2),
            ..exec_probe("start")
        })
    }));
    pod.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    h.pm.sync_pod(&pod, &running("c1"), None);
    advance(1.5).await;
    assert_eq!(notified(&mut h.rx), 1);
    assert_eq!(
        h.pm.take_restart_request("u1", "c1").as_deref(),
        Some("Container web failed startup probe")
    );
    settle().await;
    let events = &h.events.lock().unwrap().created;
    assert!(
        events.iter().any(|(_, m, _)| m == "Startup probe failed: "),
        "{events:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn workers_stop_when_the_instance_goes_away_or_the_pod_is_removed() {
    let h = harness();
    let pod = pod_with(web(|c| {
        c.readiness_probe = Some(Probe {
            period_seconds: Some(1),
            ..exec_probe("ready")
        })
    }));
    h.pm.sync_pod(&pod, &running("c1"), None);
    advance(2.5).await;
    let n = h.rt.calls("ready");
    assert!(n >= 3);
    h.pm.sync_pod(&pod, &[], None);
    advance(3.0).await;
    assert_eq!(h.rt.calls("ready"), n);

    h.pm.sync_pod(&pod, &running("c2"), None);
    assert!(
        !h.pm.is_ready("u1", "web"),
        "a new instance starts not ready"
    );
    advance(0.5).await;
    assert!(h.pm.is_ready("u1", "web"));
    h.pm.remove_pod("u1");
    let n = h.rt.calls("ready");
    advance(3.0).await;
    assert_eq!(h.rt.calls("ready"), n);
    assert!(!h.pm.is_ready("u1", "web"));
}

#[tokio::test(start_paused = true)]
async fn deleting_pod_stops_liveness_but_not_readiness() {
    let h = harness();
    let mut pod = pod_with(web(|c| {
        c.liveness_probe = Some(Probe {
            period_seconds: Some(1),
            ..exec_probe("live")
        });
        c.readiness_probe = Some(Probe {
            period_seconds: Some(1),
            ..exec_probe("ready")
        });
    }));
    h.pm.sync_pod(&pod, &running("c1"), None);
    advance(1.5).await;
    pod.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    h.pm.sync_pod(&pod, &running("c1"), None);
    let (live, ready) = (h.rt.calls("live"), h.rt.calls("ready"));
    advance(3.0).await;
    assert_eq!(h.rt.calls("live"), live);
    assert!(h.rt.calls("ready") > ready);
}

// ---- network probes (real time, local listeners) ----

/// A one-shot-per-connection HTTP server answering from `route(path) -> (status, location)`;
/// returns its port and the raw requests it saw.
async fn http_server(
    route: impl Fn(&str) -> (u16, Option<String>) + Send + Sync + 'static,
) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let seen2 = seen.clone();
    let route = Arc::new(route);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let seen = seen2.clone();
            let route = route.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let req = String::from_utf8_lossy(&buf).into_owned();
                let path = req.split(' ').nth(1).unwrap_or("/").to_string();
                seen.lock().unwrap().push(req);
                let (status, location) = route(&path);
                let loc = location
                    .map(|l| format!("Location: {l}\r\n"))
                    .unwrap_or_default();
                let resp = format!(
                    "HTTP/1.1 {status} X\r\n{loc}Content-Length: 2\r\nConnection: close\r\n\r\nok"
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    (port, seen)
}

fn http_probe_spec(port: IntOrString, path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            port,
            path: Some(path.into()),
            http_headers: Some(vec![HTTPHeader {
                name: "X-Probe".into(),
                value: "yes".into(),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn probe(p: &Probe, c: &Container) -> Outcome {
    let rt = FakeRuntime::new();
    run_probe(&rt, p, c, "c1", Some("127.0.0.1"), Duration::from_secs(1)).await
}

#[tokio::test]
async fn http_probe_sends_upstream_headers_and_judges_status() {
    let (port, seen) = http_server(|p| match p {
        "/healthz?x=1" => (200, None),
        "/moved" => (302, Some("/healthz?x=1".into())),
        "/away" => (301, Some("http://example.invalid/".into())),
        _ => (500, None),
    })
    .await;
    let c = web(|c| {
        c.ports = Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: port.into(),
            ..Default::default()
        }])
    });
    let ok = http_probe_spec(IntOrString::String("http".into()), "healthz?x=1");
    assert_eq!(probe(&ok, &c).await, Outcome::Success);
    let req = seen.lock().unwrap()[0].clone();
    assert!(req.starts_with("GET /healthz?x=1 HTTP/1.1\r\n"), "{req}");
    let lower = req.to_ascii_lowercase();
    assert!(lower.contains("user-agent: kube-probe/1.32\r\n"), "{req}");
    assert!(
        lower.contains(&format!("host: 127.0.0.1:{port}\r\n")),
        "{req}"
    );
    assert!(lower.contains("accept: */*\r\n"), "{req}");
    assert!(lower.contains("x-probe: yes\r\n"), "{req}");

    let bad = http_probe_spec(IntOrString::Int(port.into()), "/fail");
    assert_eq!(
        probe(&bad, &c).await,
        Outcome::Failure("HTTP probe failed with statuscode: 500".into())
    );
    let moved = http_probe_spec(IntOrString::Int(port.into()), "/moved");
    assert_eq!(probe(&moved, &c).await, Outcome::Success);
    assert!(seen
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .starts_with("GET /healthz?x=1 "));
    let away = http_probe_spec(IntOrString::Int(port.into()), "/away");
    assert_eq!(
        probe(&away, &c).await,
        Outcome::Success,
        "not followed off-host"
    );

    let unknown = http_probe_spec(IntOrString::String("nope".into()), "/");
    assert_eq!(
        probe(&unknown, &c).await,
        Outcome::Error("port nope not found".into())
    );
}

#[tokio::test]
async fn http_probe_reports_refused_connections_and_timeouts_as_go_does() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let c = web(|_| {});
    let p = http_probe_spec(IntOrString::Int(port.into()), "/");
    assert_eq!(
        probe(&p, &c).await,
        Outcome::Failure(format!(
            "Get \"http://127.0.0.1:{port}/\": dial tcp 127.0.0.1:{port}: connect: connection refused"
        ))
    );

    // Accepts but never answers.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    let p = http_probe_spec(IntOrString::Int(port.into()), "/");
    assert_eq!(
        probe(&p, &c).await,
        Outcome::Failure(format!(
            "Get \"http://127.0.0.1:{port}/\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        ))
    );
}

#[tokio::test]
async fn https_probe_skips_certificate_verification() {
    let dir = tempfile::tempdir().unwrap();
    let pki = component_base::pki::Pki::load_or_create(dir.path(), &[]).unwrap();
    let config = component_base::tls::server_config(&pki).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let mut p = http_probe_spec(IntOrString::Int(port.into()), "/");
    p.http_get.as_mut().unwrap().scheme = Some("HTTPS".into());
    assert_eq!(probe(&p, &web(|_| {})).await, Outcome::Success);
}

#[tokio::test]
async fn tcp_probe_connects_or_fails_with_dial_error() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let p = Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(port.into()),
            host: None,
        }),
        ..Default::default()
    };
    assert_eq!(probe(&p, &web(|_| {})).await, Outcome::Success);
    drop(l);
    assert_eq!(
        probe(&p, &web(|_| {})).await,
        Outcome::Failure(format!(
            "dial tcp 127.0.0.1:{port}: connect: connection refused"
        ))
    );
}

#[test]
fn grpc_health_messages_encode_and_decode() {
    assert_eq!(&health_frame("")[..], &[0, 0, 0, 0, 0]);
    assert_eq!(
        &health_frame("ab")[..],
        &[0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']
    );
    assert_eq!(
        net::health_response_status(&[0, 0, 0, 0, 2, 0x08, 1]),
        Ok(1)
    );
    assert_eq!(net::health_response_status(&[0, 0, 0, 0, 0]), Ok(0));
    assert!(net::health_response_status(&[0, 0, 0, 0, 3, 0x08]).is_err());
}

fn health_frame(s: &str) -> Bytes {
    net::health_request_frame(s)
}

/// An h2c gRPC health server: `status` per service name, or a grpc-status error code.
async fn grpc_server(answer: fn(&str) -> Result<u8, (u8, &'static str)>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let svc = hyper::service::service_fn(
                move |req: http::Request<hyper::body::Incoming>| async move {
                    assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                    assert_eq!(req.headers()["content-type"], "application/grpc");
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let service = if body.len() > 7 {
                        String::from_utf8_lossy(&body[7..]).into_owned()
                    } else {
                        String::new()
                    };
                    let mut trailers = http::HeaderMap::new();
                    let mut frames = Vec::new();
                    match answer(&service) {
                        Ok(status) => {
                            frames.push(Ok::<_, Infallible>(Frame::data(Bytes::from(vec![
                                0, 0, 0, 0, 2, 0x08, status,
                            ]))));
                            trailers.insert("grpc-status", "0".parse().unwrap());
                        }
                        Err((code, msg)) => {
                            trailers.insert("grpc-status", code.to_string().parse().unwrap());
                            trailers.insert("grpc-message", msg.parse().unwrap());
                        }
                    }
                    frames.push(Ok(Frame::trailers(trailers)));
                    let body = StreamBody::new(futures::stream::iter(frames));
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .header("content-type", "application/grpc")
                            .body(body)
                            .unwrap(),
                    )
                },
            );
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc),
            );
        }
    });
    port
}

#[tokio::test]
async fn grpc_probe_checks_serving_status() {
    let port = grpc_server(|svc| match svc {
        "" => Ok(1),
        "down" => Ok(2),
        _ => Err((12, "unknown service")),
    })
    .await;
    let p = |service: Option<&str>| Probe {
        grpc: Some(GRPCAction {
            port: port.into(),
            service: service.map(str::to_string),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(probe(&p(None), &web(|_| {})).await, Outcome::Success);
    assert_eq!(
        probe(&p(Some("down")), &web(|_| {})).await,
        Outcome::Failure("service unhealthy (responded with \"NOT_SERVING\")".into())
    );
    assert_eq!(
        probe(&p(Some("other")), &web(|_| {})).await,
        Outcome::Failure("this server does not implement the grpc health protocol (grpc.health.v1.Health): unknown service".into())
    );
}

// ---- lifecycle handlers ----

#[tokio::test]
async fn exec_hook_failure_carries_command_exit_code_and_output() {
    let rt = ScriptedExec::default();
    rt.script("false", &[(3, "oops")]);
    let h = LifecycleHandler {
        exec: Some(ExecAction {
            command: Some(vec!["false".into()]),
        }),
        ..Default::default()
    };
    let err = run_handler(&rt, &h, "c1", None, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        "error: command 'false' exited with 3: , message: \"oops\""
    );
    assert_eq!(
        handler_failure_message(&h, "web", "web_default(u1)", &err),
        "Exec lifecycle hook ([false]) for Container \"web\" in Pod \"web_default(u1)\" failed - error: command 'false' exited with 3: , message: \"oops\""
    );
    rt.script("true", &[(0, "")]);
    let ok = LifecycleHandler {
        exec: Some(ExecAction {
            command: Some(vec!["true".into()]),
        }),
        ..Default::default()
    };
    run_handler(&rt, &ok, "c1", None, Duration::from_secs(5))
        .await
        .unwrap();
}

#[tokio::test]
async fn http_hook_uses_pod_ip_and_ignores_status() {
    let (port, seen) = http_server(|_| (500, None)).await;
    let c = web(|c| {
        c.ports = Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: port.into(),
            ..Default::default()
        }])
    });
    let h = LifecycleHandler {
        http_get: Some(HTTPGetAction {
            port: IntOrString::String("http".into()),
            path: Some("/shutdown".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let h = resolve_handler_ports(&h, &c).unwrap();
    let rt = FakeRuntime::new();
    run_handler(&rt, &h, "c1", Some("127.0.0.1"), Duration::from_secs(2))
        .await
        .unwrap();
    assert!(seen.lock().unwrap()[0].starts_with("GET /shutdown "));
    let unresolved = LifecycleHandler {
        http_get: Some(HTTPGetAction {
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    assert!(run_handler(
        &rt,
        &unresolved,
        "c1",
        Some("127.0.0.1"),
        Duration::from_secs(2)
    )
    .await
    .is_err());
}

#[tokio::test(start_paused = true)]
async fn sleep_hook_sleeps_within_the_timeout() {
    let rt = FakeRuntime::new();
    let h = LifecycleHandler {
        sleep: Some(SleepAction { seconds: 5 }),
        ..Default::default()
    };
    let start = tokio::time::Instant::now();
    run_handler(&rt, &h, "c1", None, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(start.elapsed().as_secs(), 5);
    let err = run_handler(&rt, &h, "c1", None, Duration::from_secs(2))
        .await
        .unwrap_err();
    assert_eq!(err, "error: hook did not complete within 2s");
}
