//! The API server's connection to kubelets, against a fake kubelet started inside the test: an
//! HTTPS server (rustls, serving certificate from a test CA unrelated to the cluster's, client
//! certificates checked against the cluster CA) that serves `/containerLogs/...` (echoing what it
//! was asked, streaming lines slowly for `follow`), `/exec/...` (a WebSocket handshake done by
//! hand, then channel frames) and `/healthz`; and a plain HTTP backend for pod and service
//! proxying. Driven with the real kubectl: logs in its forms and upstream's error messages, exec
//! over WebSocket (and the SPDY fallback of kubectl 1.27 relayed as the kubelet answered),
//! `get --raw` through pods/services/nodes proxy, and `kubectl proxy`.

use base64::Engine as _;
use bytes::Bytes;
use component_base::pki::Pki;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tests::{Backend, OutputExt, StartOptions, TestCluster};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

// ------------------------------------------------------------------------------------------
// A tiny SHA-1 (the workspace has no sha1 crate), for Sec-WebSocket-Accept.

fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (slot, word) in w.iter_mut().zip(block.chunks(4)) {
            *slot = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            (e, d, c, b, a) = (d, c, b.rotate_left(30), a, t);
        }
        for (hv, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hv = hv.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (chunk, v) in out.chunks_mut(4).zip(h) {
        chunk.copy_from_slice(&v.to_be_bytes());
    }
    out
}

fn websocket_accept(key: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha1(format!("{key}{WS_GUID}").as_bytes()))
}

/// A WebSocket frame; client frames are masked.
fn ws_frame(opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// Read one WebSocket frame: (opcode, unmasked payload).
async fn read_ws_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    r.read_exact(&mut head).await?;
    let masked = head[1] & 0x80 != 0;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).await?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            r.read_exact(&mut b).await?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut key = [0u8; 4];
    if masked {
        r.read_exact(&mut key).await?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    Ok((head[0] & 0x0f, payload))
}

// ------------------------------------------------------------------------------------------
// The fake kubelet.

/// One request the fake kubelet received.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    headers: http::HeaderMap,
    /// CN and groups of the client certificate the API server presented.
    client: Option<(String, Vec<String>)>,
}

#[derive(Default)]
struct KubeletLog {
    seen: Mutex<Vec<Seen>>,
    /// Set when a `follow` stream found its reader gone.
    follow_closed: AtomicBool,
}

struct FakeKubelet {
    port: u16,
    log: Arc<KubeletLog>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeKubelet {
    /// Serve HTTPS on all addresses with `serving` (cert, key); client certificates must chain
    /// to `client_ca_pem`.
    async fn start(serving: &(String, String), client_ca_pem: &str) -> Self {
        let tls =
            component_base::tls::server_config_from_pem(client_ca_pem, &serving.0, &serving.1)
                .expect("fake kubelet TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(KubeletLog::default());
        let state = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let state = state.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let client = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(component_base::tls::client_identity)
                        .map(|u| (u.name, u.groups));
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        let client = client.clone();
                        async move { Ok::<_, Infallible>(kubelet_route(req, &state, client)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Self { port, log, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.seen.lock().unwrap().clone()
    }

    fn last(&self, path_prefix: &str) -> Seen {
        self.seen()
            .into_iter()
            .rev()
            .find(|s| s.path.starts_with(path_prefix))
            .unwrap_or_else(|| panic!("the kubelet saw no request for {path_prefix}*"))
    }
}

fn text(code: u16, body: impl Into<String>) -> http::Response<BoxBody> {
    http::Response::builder()
        .status(code)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from(body.into())).boxed_unsync())
        .unwrap()
}

fn kubelet_route(
    mut req: http::Request<Incoming>,
    log: &Arc<KubeletLog>,
    client: Option<(String, Vec<String>)>,
) -> http::Response<BoxBody> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    log.seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: path.clone(),
        query: query.clone(),
        headers: req.headers().clone(),
        client: client.clone(),
    });
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segs.as_slice() {
        ["healthz"] => text(200, "ok"),
        ["containerLogs", _, "waiting", c] => text(
            400,
            format!("container \"{c}\" in pod \"waiting\" is waiting to start: ContainerCreating"),
        ),
        ["containerLogs", ns, pod, c] if query.split('&').any(|p| p == "follow=true") => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
            let log = log.clone();
            let first = format!("following {ns}/{pod}/{c}\n");
            tokio::spawn(async move {
                let mut line = first;
                for i in 1.. {
                    if tx.send(Bytes::from(line)).await.is_err() {
                        log.follow_closed.store(true, Ordering::SeqCst);
                        return;
                    }
                    line = format!("line {i}\n");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
            });
            http::Response::builder()
                .header("content-type", "text/plain")
                .body(StreamBody::new(stream).boxed_unsync())
                .unwrap()
        }
        ["containerLogs", ns, pod, c] => {
            let who = client.map(|c| c.0).unwrap_or_default();
            text(
                200,
                format!("log of {ns}/{pod}/{c}\nquery: {query}\nclient: {who}\n"),
            )
        }
        ["exec" | "attach", _, _, c] => {
            let (c, name) = (c.to_string(), c.to_string());
            let stdin = query.split('&').any(|p| p == "input=1");
            websocket(&mut req, move |mut io| async move {
                let _ = exec_session(&mut io, &name, stdin).await;
            })
            // What a kubelet says when the container is gone (kubectl prints it after "unable
            // to upgrade connection:").
            .unwrap_or_else(|| text(400, format!("container not found (\"{c}\")")))
        }
        ["portForward", _, _] => websocket(&mut req, |mut io| async move {
            // Hold the tunnel open until the client leaves.
            while read_ws_frame(&mut io).await.is_ok() {}
        })
        .unwrap_or_else(|| text(400, "only WebSocket port-forwarding here")),
        _ => text(404, "404 page not found\n"),
    }
}

/// Answer a WebSocket upgrade by hand (the first offered subprotocol, v5.channel.k8s.io
/// preferred) and run `session` on the upgraded connection; `None` if `req` is no WebSocket
/// upgrade.
fn websocket<F, Fut>(
    req: &mut http::Request<Incoming>,
    session: F,
) -> Option<http::Response<BoxBody>>
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let headers = req.headers();
    let is_ws = headers
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !is_ws {
        return None;
    }
    let key = headers
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let offered: Vec<String> = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_string()))
        .collect();
    let proto = offered
        .iter()
        .find(|p| *p == "v5.channel.k8s.io")
        .or(offered.first())
        .cloned()
        .unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(up) = on_upgrade.await {
            session(TokioIo::new(up)).await;
        }
    });
    Some(
        http::Response::builder()
            .status(101)
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", websocket_accept(&key))
            .header("sec-websocket-protocol", proto)
            .body(Full::new(Bytes::new()).boxed_unsync())
            .unwrap(),
    )
}

/// The kubelet's half of an exec session in the v5 channel protocol: a stdout line, the stdin
/// frame echoed back (with stdin), the success status, then a close.
async fn exec_session<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    container: &str,
    stdin: bool,
) -> std::io::Result<()> {
    let mut hello = vec![1u8];
    hello.extend_from_slice(format!("hello from {container}\n").as_bytes());
    io.write_all(&ws_frame(2, &hello, false)).await?;
    if stdin {
        let (_, payload) = read_ws_frame(io).await?;
        assert_eq!(payload.first(), Some(&0), "stdin arrives on channel 0");
        let mut echo = vec![1u8];
        echo.extend_from_slice(&payload[1..]);
        io.write_all(&ws_frame(2, &echo, false)).await?;
    }
    let mut status = vec![3u8];
    status.extend_from_slice(br#"{"metadata":{},"status":"Success"}"#);
    io.write_all(&ws_frame(2, &status, false)).await?;
    io.write_all(&ws_frame(8, &1000u16.to_be_bytes(), false))
        .await?;
    io.flush().await?;
    // Wait for the client's close (or its going away) before hanging up.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match read_ws_frame(io).await {
                Ok((8, _)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    Ok(())
}

// ------------------------------------------------------------------------------------------
// A plain HTTP backend for pods/proxy and services/proxy.

async fn start_backend() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(backend_route);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    (port, task)
}

async fn backend_route(
    mut req: http::Request<Incoming>,
) -> Result<http::Response<BoxBody>, Infallible> {
    let h = |req: &http::Request<Incoming>, k: &str| {
        req.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    if h(&req, "upgrade") == "echo" {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(up) = on_upgrade.await else { return };
            let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        return Ok(http::Response::builder()
            .status(101)
            .header("connection", "Upgrade")
            .header("upgrade", "echo")
            .body(Full::new(Bytes::new()).boxed_unsync())
            .unwrap());
    }
    if req.uri().path() == "/redirect" {
        return Ok(http::Response::builder()
            .status(302)
            .header("location", "/landing/")
            .header("access-control-allow-origin", "*")
            .body(Full::new(Bytes::new()).boxed_unsync())
            .unwrap());
    }
    let summary = format!(
        "backend {} {}\nx-forwarded-uri: {}\nauthorization: {}\n",
        req.method(),
        req.uri(),
        h(&req, "x-forwarded-uri"),
        h(&req, "authorization"),
    );
    let body = req.into_body().collect().await.unwrap().to_bytes();
    Ok(text(
        200,
        format!("{summary}body: {}\n", String::from_utf8_lossy(&body)),
    ))
}

// ------------------------------------------------------------------------------------------
// Cluster helpers.

/// A non-loopback address of this machine (pod and node proxying refuse loopback targets, as
/// upstream does), if it has one.
fn host_ip() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.255:9")
        .or_else(|_| s.connect("10.255.255.255:9"))
        .ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// A CA unrelated to the cluster's, and a serving certificate from it for `ips`.
fn test_ca(dir: &std::path::Path, ips: &[IpAddr]) -> (Pki, (String, String)) {
    let pki = Pki::load_or_create(dir, &[]).expect("test CA");
    let sans: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    let serving = pki
        .issue_serving_cert("fake-kubelet", &sans)
        .expect("kubelet serving certificate");
    (pki, serving)
}

fn cluster_ca(c: &TestCluster) -> String {
    std::fs::read_to_string(c.data_dir().join("pki").join("ca.crt")).expect("cluster CA")
}

fn node(name: &str, ip: IpAddr, port: u16) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {
            "addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip.to_string()}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}})
}

fn pod(name: &str, node: Option<&str>, containers: &[&str]) -> serde_json::Value {
    let mut p = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"containers": containers.iter().map(|c| serde_json::json!({"name": c, "image": "busybox"})).collect::<Vec<_>>()}});
    if let Some(n) = node {
        p["spec"]["nodeName"] = serde_json::json!(n);
    }
    p
}

async fn create(c: &TestCluster, items: Vec<serde_json::Value>) {
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
    c.kubectl_stdin(&["create", "-f", "-"], &list.to_string())
        .await
        .ok();
}

/// Mark a pod Running with `ip` as its address (what a kubelet reports).
async fn set_pod_ip(c: &TestCluster, pod: &str, ip: IpAddr) {
    let patch = serde_json::json!({"status": {"phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}]}});
    c.kubectl(&[
        "patch",
        "pod",
        pod,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])
    .await
    .ok();
}

async fn next_line<R: AsyncRead + Unpin>(
    lines: &mut tokio::io::Lines<BufReader<R>>,
    what: &str,
) -> String {
    match tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await {
        Ok(Ok(Some(l))) => l,
        Ok(Ok(None)) => panic!("kubectl ended before {what}"),
        Ok(Err(e)) => panic!("reading kubectl output for {what}: {e}"),
        Err(_) => panic!("no output line for {what} within 20s"),
    }
}

/// A TLS connection to the API server as the admin (credentials from the kubeconfig).
async fn admin_tls(c: &TestCluster) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&c.kubeconfig).unwrap()).unwrap();
    let pem = |v: &serde_yaml::Value, k: &str| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v[k].as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    let (cluster, user) = (&doc["clusters"][0]["cluster"], &doc["users"][0]["user"]);
    let tls = component_base::tls::client_config(
        &pem(cluster, "certificate-authority-data"),
        Some((
            &pem(user, "client-certificate-data"),
            &pem(user, "client-key-data"),
        )),
    )
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(tls)
        .connect(rustls::pki_types::ServerName::from(c.addr.ip()), tcp)
        .await
        .unwrap()
}

/// Send a raw HTTP/1.1 request head and read the response head; returns (status, headers,
/// bytes already read past the head).
async fn raw_head<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    head: &str,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut chunk))
            .await
            .expect("a response within 20s")
            .unwrap();
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, buf[end + 4..].to_vec())
}

fn header<'a>(headers: &'a [(String, String)], k: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == k)
        .map(|(_, v)| v.as_str())
}

/// Reads first from what was already buffered, then from the stream.
struct Prefixed<'a, S> {
    buf: std::io::Cursor<Vec<u8>>,
    inner: &'a mut S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<'_, S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let pos = self.buf.position() as usize;
        let left = self.buf.get_ref().len() - pos;
        if left > 0 {
            let n = left.min(out.remaining());
            out.put_slice(&self.buf.get_ref()[pos..pos + n]);
            self.buf.set_position((pos + n) as u64);
            return std::task::Poll::Ready(Ok(()));
        }
        std::pin::Pin::new(&mut *self.inner).poll_read(cx, out)
    }
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

// ------------------------------------------------------------------------------------------
// Scenarios.

#[test]
fn sha1_matches_the_websocket_rfc_example() {
    // RFC 6455 §1.3.
    assert_eq!(
        websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_logs_stream_from_the_kubelet_with_upstreams_errors() {
    let c = TestCluster::start(Backend::Embedded).await.unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let ip = host_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (_ca, serving) = test_ca(ca_dir.path(), &[ip]);
    let kubelet = FakeKubelet::start(&serving, &cluster_ca(&c)).await;
    let dead_port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    create(
        &c,
        vec![
            node("n1", ip, kubelet.port),
            node("dead", IpAddr::V4(Ipv4Addr::LOCALHOST), dead_port),
            serde_json::json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "bare"}}),
            pod("web", Some("n1"), &["c1", "c2"]),
            pod("single", Some("n1"), &["app"]),
            pod("waiting", Some("n1"), &["w"]),
            pod("pending", None, &["app"]),
            pod("stranded", Some("dead"), &["app"]),
            pod("homeless", Some("bare"), &["app"]),
            pod("orphan", Some("gone"), &["app"]),
        ],
    )
    .await;

    // The only container is the default; the kubelet gets upstream's path and query, and the
    // API server's client certificate.
    let out = c.kubectl(&["logs", "single"]).await.ok();
    assert_eq!(
        out,
        "log of default/single/app\nquery: \nclient: kube-apiserver-kubelet-client\n"
    );
    let seen = kubelet.last("/containerLogs/default/single/app");
    assert_eq!(seen.method, "GET");
    assert_eq!(
        seen.client,
        Some((
            "kube-apiserver-kubelet-client".to_string(),
            vec!["system:masters".to_string()]
        ))
    );
    assert!(
        seen.headers.get("authorization").is_none(),
        "the admin's credentials must not reach the kubelet"
    );

    // kubectl's query becomes upstream's kubelet query.
    let out = c
        .kubectl(&["logs", "web", "--tail=2", "--timestamps", "-c", "c1"])
        .await
        .ok();
    assert_eq!(
        out,
        "log of default/web/c1\nquery: tailLines=2&timestamps=true\nclient: kube-apiserver-kubelet-client\n"
    );
    let out = c
        .kubectl(&[
            "logs",
            "web",
            "-c",
            "c2",
            "--since=1h",
            "--limit-bytes=100",
            "-p",
        ])
        .await
        .ok();
    assert!(
        out.contains("query: limitBytes=100&previous=true&sinceSeconds=3600\n"),
        "{out}"
    );
    let raw = c
        .raw(
            "GET",
            "/api/v1/namespaces/default/pods/web/log?container=c1&sinceTime=2024-05-01T10:00:00%2B02:00",
            None,
            "",
        )
        .await;
    assert_eq!(raw.status, 200, "{}", raw.text());
    assert_eq!(raw.header_all("content-type"), ["text/plain"]);
    assert!(
        raw.text()
            .contains("query: sinceTime=2024-05-01T08%3A00%3A00Z\n"),
        "{}",
        raw.text()
    );

    // Upstream's errors, as kubectl prints them.
    // (kubectl looks the pod up itself first and words that error its own way.)
    let err = c.kubectl(&["logs", "nope"]).await.fails();
    assert_eq!(
        err,
        "error: error from server (NotFound): pods \"nope\" not found in namespace \"default\"\n"
    );
    // kubectl checks the container name itself too; the server's answer, through --raw:
    let err = c.kubectl(&["logs", "web", "-c", "c3"]).await.fails();
    assert_eq!(err, "error: container c3 is not valid for pod web\n");
    let err = c
        .kubectl(&[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/web/log?container=c3",
        ])
        .await
        .fails();
    assert_eq!(
        err,
        "Error from server (BadRequest): container c3 is not valid for pod web\n"
    );
    let err = c
        .kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods/web/log"])
        .await
        .fails();
    assert_eq!(
        err,
        "Error from server (BadRequest): a container name must be specified for pod web, choose one of: [c1 c2]\n"
    );
    let err = c
        .kubectl(&["get", "--raw", "/api/v1/namespaces/default/pods/nope/log"])
        .await
        .fails();
    assert_eq!(
        err,
        "Error from server (NotFound): pods \"nope\" not found\n"
    );
    let bad = c
        .raw(
            "GET",
            "/api/v1/namespaces/default/pods/single/log?tailLines=-1",
            None,
            "",
        )
        .await;
    assert_eq!(bad.status, 422, "{}", bad.text());
    assert_eq!(
        bad.json()["message"],
        "PodLogOptions \"single\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
    );
    // The kubelet's own refusal is relayed as upstream's response checker words it.
    let err = c.kubectl(&["logs", "waiting"]).await.fails();
    assert_eq!(
        err,
        "Error from server (BadRequest): container \"w\" in pod \"waiting\" is waiting to start: ContainerCreating\n"
    );
    // A pod not yet scheduled has no log location: no content.
    let pending = c
        .raw(
            "GET",
            "/api/v1/namespaces/default/pods/pending/log",
            None,
            "",
        )
        .await;
    assert_eq!((pending.status, pending.body.len()), (204, 0));
    assert_eq!(c.kubectl(&["logs", "pending"]).await.ok(), "");
    // Node problems.
    let err = c.kubectl(&["logs", "orphan"]).await.fails();
    assert_eq!(
        err,
        "Error from server (NotFound): nodes \"gone\" not found\n"
    );
    let err = c.kubectl(&["logs", "homeless"]).await.fails();
    assert_eq!(
        err,
        "Error from server: no preferred addresses found; known addresses: []\n"
    );
    let err = c.kubectl(&["logs", "stranded"]).await.fails();
    assert_eq!(
        err,
        format!("Error from server: Get \"https://127.0.0.1:{dead_port}/containerLogs/default/stranded/app\": dial tcp 127.0.0.1:{dead_port}: connect: connection refused\n")
    );

    // logs -f: lines arrive as the kubelet writes them; killing kubectl ends the kubelet's
    // stream too.
    let mut child = c.kubectl_spawn(&["logs", "-f", "web", "-c", "c2"]);
    let mut out = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(
        next_line(&mut out, "the first followed line").await,
        "following default/web/c2"
    );
    assert_eq!(next_line(&mut out, "line 1").await, "line 1");
    assert_eq!(next_line(&mut out, "line 2").await, "line 2");
    assert_eq!(
        kubelet.last("/containerLogs/default/web/c2").query,
        "follow=true"
    );
    assert!(!kubelet.log.follow_closed.load(Ordering::SeqCst));
    child.kill().await.unwrap();
    let log = kubelet.log.clone();
    wait_until(
        "the kubelet's follow stream ends after kubectl is gone",
        || log.follow_closed.load(Ordering::SeqCst),
    )
    .await;
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_upgrades_are_proxied_to_the_kubelet() {
    let c = TestCluster::start(Backend::Embedded).await.unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let ip = host_ip().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (_ca, serving) = test_ca(ca_dir.path(), &[ip]);
    let kubelet = FakeKubelet::start(&serving, &cluster_ca(&c)).await;
    let dead_port = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    create(
        &c,
        vec![
            node("n1", ip, kubelet.port),
            node("dead", IpAddr::V4(Ipv4Addr::LOCALHOST), dead_port),
            pod("single", Some("n1"), &["app"]),
            pod("web", Some("n1"), &["c1", "c2"]),
            pod("pending", None, &["app"]),
            pod("stranded", Some("dead"), &["app"]),
        ],
    )
    .await;
    for p in ["single", "web", "stranded"] {
        set_pod_ip(&c, p, IpAddr::V4(Ipv4Addr::new(10, 244, 0, 9))).await;
    }

    // The real kubectl over WebSocket v5: the kubelet's stdout frame is printed and its success
    // status ends the command.
    let out = c
        .kubectl(&["exec", "single", "--", "echo", "hi"])
        .await
        .ok();
    assert_eq!(out, "hello from app\n");
    let seen = kubelet.last("/exec/");
    assert_eq!(
        (
            seen.method.as_str(),
            seen.path.as_str(),
            seen.query.as_str()
        ),
        (
            "GET",
            "/exec/default/single/app",
            "command=echo&command=hi&error=1&output=1"
        )
    );
    assert_eq!(seen.headers["upgrade"], "websocket");
    assert_eq!(seen.headers["sec-websocket-protocol"], "v5.channel.k8s.io");
    assert!(seen.headers.get("authorization").is_none());
    assert_eq!(
        seen.client.as_ref().map(|c| c.0.as_str()),
        Some("kube-apiserver-kubelet-client")
    );
    let out = c
        .kubectl(&["exec", "web", "-c", "c2", "--", "ls"])
        .await
        .ok();
    assert_eq!(out, "hello from c2\n");

    // A raw WebSocket through the API server: the handshake is the kubelet's, and bytes flow
    // both ways.
    let mut s = admin_tls(&c).await;
    let (status, headers, rest) = raw_head(
        &mut s,
        &format!(
            "GET /api/v1/namespaces/default/pods/single/exec?command=cat&stdin=true&stdout=true HTTP/1.1\r\n\
             Host: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n",
            c.addr
        ),
    )
    .await;
    assert_eq!(status, 101);
    assert_eq!(
        header(&headers, "sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(
        header(&headers, "sec-websocket-protocol"),
        Some("v5.channel.k8s.io")
    );
    let mut r = Prefixed {
        buf: std::io::Cursor::new(rest),
        inner: &mut s,
    };
    let (op, payload) = read_ws_frame(&mut r).await.unwrap();
    assert_eq!((op, payload.as_slice()), (2, &b"\x01hello from app\n"[..]));
    r.inner
        .write_all(&ws_frame(2, b"\x00ping through the apiserver", true))
        .await
        .unwrap();
    let (_, payload) = read_ws_frame(&mut r).await.unwrap();
    assert_eq!(payload, b"\x01ping through the apiserver");
    let (_, status) = read_ws_frame(&mut r).await.unwrap();
    let mut success = vec![3u8];
    success.extend_from_slice(br#"{"metadata":{},"status":"Success"}"#);
    assert_eq!(
        status, success,
        "the status channel says the command succeeded"
    );
    let (op, _) = read_ws_frame(&mut r).await.unwrap();
    assert_eq!(op, 8, "the kubelet closes the session");
    assert_eq!(kubelet.last("/exec/").query, "command=cat&input=1&output=1");
    s.write_all(&ws_frame(8, &1000u16.to_be_bytes(), true))
        .await
        .unwrap();
    // The kubelet hangs up after the close handshake; the API server closes the client's side.
    let mut tail = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut tail))
        .await
        .expect("the API server closes the upgraded connection when the kubelet does")
        .ok();

    // attach and port-forward take the same road, with upstream's kubelet paths and params.
    for (path, protocol, kubelet_path, kubelet_query) in [
        (
            "attach?stdout=true&stderr=true&container=app",
            "v5.channel.k8s.io",
            "/attach/default/single/app",
            "error=1&output=1",
        ),
        (
            "portforward",
            "SPDY/3.1+portforward.k8s.io",
            "/portForward/default/single",
            "",
        ),
        (
            "portforward?ports=8080&ports=9090",
            "v4.channel.k8s.io",
            "/portForward/default/single",
            "port=8080%2C9090",
        ),
    ] {
        let mut s = admin_tls(&c).await;
        let (status, headers, _) = raw_head(
            &mut s,
            &format!(
                "GET /api/v1/namespaces/default/pods/single/{path} HTTP/1.1\r\n\
                 Host: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                 Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n",
                c.addr
            ),
        )
        .await;
        assert_eq!(status, 101, "{path}");
        assert_eq!(header(&headers, "sec-websocket-protocol"), Some(protocol));
        assert_eq!(
            header(&headers, "sec-websocket-accept"),
            Some("HSmrc0sMlYUkAGmm5OPpG2HaGWk=")
        );
        let seen = kubelet.last(kubelet_path);
        assert_eq!(
            (seen.path.as_str(), seen.query.as_str()),
            (kubelet_path, kubelet_query),
            "{path}"
        );
    }

    // kubectl 1.27 upgrades with SPDY; this kubelet refuses that, and its answer is relayed as
    // it came.
    if let Some(old) = tests::kubectl_127() {
        let err = c
            .kubectl_with(&old, &["exec", "single", "--", "true"], None)
            .await
            .fails();
        assert!(
            err.contains("unable to upgrade connection: container not found (\"app\")"),
            "{err}"
        );
        let seen = kubelet.last("/exec/");
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.headers["upgrade"], "SPDY/3.1");
        let versions: Vec<&str> = seen
            .headers
            .get_all("x-stream-protocol-version")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(versions.contains(&"v4.channel.k8s.io"), "{versions:?}");
    }

    // Upstream's errors before and at the upgrade.
    let not_upgrade = c
        .raw(
            "POST",
            "/api/v1/namespaces/default/pods/single/exec?command=ls&stdout=true",
            None,
            "",
        )
        .await;
    assert_eq!(not_upgrade.status, 400);
    assert_eq!(not_upgrade.json()["message"], "Upgrade request required");
    let pending = c
        .raw(
            "POST",
            "/api/v1/namespaces/default/pods/pending/exec?command=ls&stdout=true",
            None,
            "",
        )
        .await;
    assert_eq!(
        (pending.status, pending.json()["message"].as_str()),
        (400, Some("pod pending does not have a host assigned"))
    );
    let wrong = c
        .raw(
            "POST",
            "/api/v1/namespaces/default/pods/web/exec?command=ls&stdout=true&container=nope",
            None,
            "",
        )
        .await;
    assert_eq!(
        (wrong.status, wrong.json()["message"].as_str()),
        (400, Some("container nope is not valid for pod web"))
    );
    let mut s = admin_tls(&c).await;
    let (status, _, rest) = raw_head(
        &mut s,
        &format!(
            "GET /api/v1/namespaces/default/pods/stranded/exec?command=ls&stdout=true HTTP/1.1\r\n\
             Host: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            c.addr
        ),
    )
    .await;
    assert_eq!(status, 500);
    let mut body = rest;
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut body)).await;
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains(&format!(
            "error dialing backend: dial tcp 127.0.0.1:{dead_port}: connect: connection refused"
        )),
        "{body}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_service_and_node_proxy_reach_their_backends() {
    let c = TestCluster::start(Backend::Embedded).await.unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let host = host_ip();
    let ip = host.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (_ca, serving) = test_ca(ca_dir.path(), &[ip]);
    let kubelet = FakeKubelet::start(&serving, &cluster_ca(&c)).await;
    let (backend_port, _backend) = start_backend().await;
    let mut backend_pod = pod("backend", Some("n1"), &["app"]);
    backend_pod["spec"]["containers"][0]["ports"] =
        serde_json::json!([{"name": "http", "containerPort": backend_port}]);
    let target_ref = serde_json::json!({"kind": "Pod", "namespace": "default", "name": "backend"});
    create(
        &c,
        vec![
            node("n1", ip, kubelet.port),
            backend_pod,
            pod("local", Some("n1"), &["app"]),
            serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": backend_port}]}}),
            serde_json::json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "web"},
                "subsets": [{"addresses": [{"ip": ip.to_string(), "targetRef": target_ref}],
                             "ports": [{"name": "http", "port": backend_port}]}]}),
            serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "sliced"},
                "spec": {"ports": [{"port": 8080, "targetPort": backend_port}]}}),
            serde_json::json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "sliced-x1", "labels": {"kubernetes.io/service-name": "sliced"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": [ip.to_string()], "conditions": {"ready": true}, "targetRef": target_ref}],
                "ports": [{"port": backend_port, "protocol": "TCP"}]}),
            serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "empty"},
                "spec": {"ports": [{"port": 80}]}}),
            serde_json::json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "empty"}}),
            serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "unbacked"},
                "spec": {"ports": [{"name": "http", "port": 80}]}}),
            serde_json::json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "unbacked"},
                "subsets": [{"addresses": [{"ip": ip.to_string()}], "ports": [{"name": "http", "port": backend_port}]}]}),
        ],
    )
    .await;
    set_pod_ip(&c, "backend", ip).await;
    set_pod_ip(&c, "local", IpAddr::V4(Ipv4Addr::LOCALHOST)).await;
    let svc = "/api/v1/namespaces/default/services";

    // services/proxy: by port name and by port number, any method, body and query forwarded,
    // the client's credentials dropped.
    let out = c
        .kubectl(&[
            "get",
            "--raw",
            &format!("{svc}/web:http/proxy/hello/world?x=1&y=two"),
        ])
        .await
        .ok();
    assert_eq!(
        out,
        format!("backend GET /hello/world?x=1&y=two\nx-forwarded-uri: {svc}/web:http/proxy/hello/world\nauthorization: -\nbody: \n")
    );
    let out = c
        .kubectl(&["get", "--raw", &format!("{svc}/http:web:80/proxy/")])
        .await
        .ok();
    assert!(out.starts_with("backend GET /\n"), "{out}");
    let posted = c
        .raw_as(
            &tests::Auth::Admin,
            "POST",
            &format!("{svc}/web:80/proxy/submit"),
            Some("text/plain"),
            "payload",
        )
        .await;
    assert_eq!(posted.status, 200, "{}", posted.text());
    assert!(posted.text().starts_with("backend POST /submit\n"));
    assert!(
        posted.text().ends_with("body: payload\n"),
        "{}",
        posted.text()
    );
    // A redirect from the backend is sent back through the proxy path, minus CORS headers.
    let redirect = c
        .raw("GET", &format!("{svc}/web:80/proxy/redirect"), None, "")
        .await;
    assert_eq!(redirect.status, 302);
    assert_eq!(
        redirect.header_all("location"),
        [format!("{svc}/web:80/proxy/landing/")]
    );
    assert!(redirect
        .header_all("access-control-allow-origin")
        .is_empty());
    // No trailing slash: upstream's redirect.
    let bare = c
        .raw("GET", &format!("{svc}/sliced/proxy?a=b"), None, "")
        .await;
    assert_eq!(bare.status, 301, "{}", bare.text());
    assert_eq!(
        bare.header_all("location"),
        [format!("{svc}/sliced/proxy/?a=b")]
    );
    // A service whose only port is named needs the port in the request, as upstream.
    let err = c
        .kubectl(&["get", "--raw", &format!("{svc}/web/proxy/")])
        .await
        .fails();
    assert_eq!(
        err,
        "Error from server (ServiceUnavailable): no endpoints available for service \"web\"\n"
    );
    // Only EndpointSlices: still found.
    let out = c
        .kubectl(&["get", "--raw", &format!("{svc}/sliced:8080/proxy/s")])
        .await
        .ok();
    assert!(out.starts_with("backend GET /s\n"), "{out}");
    // Upstream's errors.
    let err = c
        .kubectl(&["get", "--raw", &format!("{svc}/empty/proxy/")])
        .await
        .fails();
    assert_eq!(
        err,
        "Error from server (ServiceUnavailable): no endpoints available for service \"empty\"\n"
    );
    let err = c
        .kubectl(&["get", "--raw", &format!("{svc}/unbacked:80/proxy/")])
        .await
        .fails();
    assert_eq!(
        err,
        "Error from server (ServiceUnavailable): no endpoints available for service \"unbacked:80\"\n"
    );
    let err = c
        .kubectl(&["get", "--raw", &format!("{svc}/web:81/proxy/")])
        .await
        .fails();
    assert_eq!(
        err,
        "Error from server (ServiceUnavailable): no service port 81 found for service \"web\"\n"
    );
    let err = c
        .kubectl(&["get", "--raw", &format!("{svc}/nope/proxy/")])
        .await
        .fails();
    assert_eq!(
        err,
        "Error from server (NotFound): endpoints \"nope\" not found\n"
    );

    // kubectl proxy, then plain HTTP to a service through it.
    let mut proxy = c.kubectl_spawn(&["proxy", "--port=0"]);
    let mut out = BufReader::new(proxy.stdout.take().unwrap()).lines();
    let banner = next_line(&mut out, "the proxy banner").await;
    let port: u16 = banner
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("{banner}"));
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        format!(
            "GET {svc}/web:80/proxy/via-kubectl-proxy HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut raw))
        .await
        .unwrap()
        .unwrap();
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    assert!(raw.contains("backend GET /via-kubectl-proxy\n"), "{raw}");
    proxy.kill().await.unwrap();

    // pods/proxy: to the pod IP on the first declared port (or a named or numbered one);
    // loopback pod addresses are refused, as upstream does.
    let pods = "/api/v1/namespaces/default/pods";
    let err = c
        .kubectl(&["get", "--raw", &format!("{pods}/local:80/proxy/")])
        .await
        .fails();
    assert_eq!(err, "Error from server (BadRequest): address not allowed\n");
    if host.is_some() {
        let out = c
            .kubectl(&["get", "--raw", &format!("{pods}/backend/proxy/p?q=1")])
            .await
            .ok();
        assert_eq!(
            out,
            format!("backend GET /p?q=1\nx-forwarded-uri: {pods}/backend/proxy/p\nauthorization: -\nbody: \n")
        );
        let out = c
            .kubectl(&["get", "--raw", &format!("{pods}/backend:http/proxy/named")])
            .await
            .ok();
        assert!(out.starts_with("backend GET /named\n"), "{out}");
        // Following the empty-path redirect.
        let out = c
            .kubectl(&[
                "get",
                "--raw",
                &format!("{pods}/backend:{backend_port}/proxy"),
            ])
            .await
            .ok();
        assert!(out.starts_with("backend GET /\n"), "{out}");
        // An upgrade through pods/proxy: the backend's 101, then bytes both ways.
        let mut s = admin_tls(&c).await;
        let (status, headers, rest) = raw_head(
            &mut s,
            &format!(
                "GET {pods}/backend/proxy/echo HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
                c.addr
            ),
        )
        .await;
        assert_eq!((status, header(&headers, "upgrade")), (101, Some("echo")));
        assert!(rest.is_empty());
        s.write_all(b"round trip").await.unwrap();
        let mut back = [0u8; 10];
        tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&back, b"round trip");

        // nodes/proxy: to the kubelet with the API server's client certificate.
        let out = c
            .kubectl(&["get", "--raw", "/api/v1/nodes/n1/proxy/healthz"])
            .await
            .ok();
        assert_eq!(out, "ok");
        let seen = kubelet.last("/healthz");
        assert_eq!(
            seen.client.map(|c| c.0),
            Some("kube-apiserver-kubelet-client".to_string())
        );
        assert_eq!(
            seen.headers["x-forwarded-uri"],
            "/api/v1/nodes/n1/proxy/healthz"
        );
    } else {
        eprintln!("no non-loopback address on this machine: skipping the positive pods/nodes proxy checks");
        let err = c
            .kubectl(&["get", "--raw", "/api/v1/nodes/n1/proxy/healthz"])
            .await
            .fails();
        assert_eq!(err, "Error from server (BadRequest): address not allowed\n");
    }
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_serving_certificates_are_verified_when_a_ca_is_given() {
    let ca_dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (_ca, trusted) = test_ca(ca_dir.path(), &[ip]);
    let (_other, untrusted) = test_ca(other_dir.path(), &[ip]);
    let c = TestCluster::start_with(
        Backend::Embedded,
        StartOptions {
            extra_args: vec![format!(
                "--kubelet-certificate-authority={}",
                ca_dir.path().join("ca.crt").display()
            )],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let good = FakeKubelet::start(&trusted, &cluster_ca(&c)).await;
    let bad = FakeKubelet::start(&untrusted, &cluster_ca(&c)).await;
    create(
        &c,
        vec![
            node("good", ip, good.port),
            node("bad", ip, bad.port),
            pod("on-good", Some("good"), &["app"]),
            pod("on-bad", Some("bad"), &["app"]),
        ],
    )
    .await;
    let out = c.kubectl(&["logs", "on-good"]).await.ok();
    assert!(out.starts_with("log of default/on-good/app\n"), "{out}");
    let err = c.kubectl(&["logs", "on-bad"]).await.fails();
    assert_eq!(
        err,
        format!("Error from server: Get \"https://127.0.0.1:{}/containerLogs/default/on-bad/app\": tls: failed to verify certificate: x509: certificate signed by unknown authority\n", bad.port)
    );
    assert!(
        bad.seen().is_empty(),
        "no request reaches an unverified kubelet"
    );
    // insecureSkipTLSVerifyBackend skips the check for logs only.
    let out = c
        .kubectl(&["logs", "on-bad", "--insecure-skip-tls-verify-backend"])
        .await
        .ok();
    assert!(out.starts_with("log of default/on-bad/app\n"), "{out}");
    c.stop().await;
}
