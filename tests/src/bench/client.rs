//! A minimal HTTPS/1.1 client for the load generator: raw hyper connections over tokio-rustls,
//! authenticated with the admin client certificate from the server's kubeconfig.
//!
//! One [`Conn`] is one keep-alive TCP+TLS connection carrying one request at a time, which is
//! how each benchmark worker uses it. [`Endpoint::insecure`] skips server verification and
//! presents no client certificate; it exists only to poll `/readyz` before a kubeconfig (and
//! so the CA) exists.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where and how to connect: the server address and a TLS configuration.
#[derive(Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    host: Arc<str>,
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

/// A request the workers send: everything but the connection.
#[derive(Clone, Debug)]
pub struct Req {
    pub method: Method,
    pub path: String,
    pub body: Bytes,
    pub content_type: Option<&'static str>,
}

impl Req {
    pub fn get(path: impl Into<String>) -> Self {
        Self {
            method: Method::GET,
            path: path.into(),
            body: Bytes::new(),
            content_type: None,
        }
    }

    pub fn post_json(path: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self {
            method: Method::POST,
            path: path.into(),
            body: body.into(),
            content_type: Some("application/json"),
        }
    }

    pub fn merge_patch(path: impl Into<String>, body: impl Into<Bytes>) -> Self {
        Self {
            method: Method::PATCH,
            path: path.into(),
            body: body.into(),
            content_type: Some("application/merge-patch+json"),
        }
    }

    pub fn delete(path: impl Into<String>) -> Self {
        Self {
            method: Method::DELETE,
            path: path.into(),
            body: Bytes::new(),
            content_type: None,
        }
    }
}

/// A fully read response.
pub struct Response {
    pub status: StatusCode,
    pub body: Bytes,
}

impl Response {
    /// The status and the start of the body, for error messages.
    pub fn describe(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(300).collect();
        format!("{}: {}", self.status, body.trim())
    }
}

/// The admin credentials and server URL of a kubeconfig written by the apiserver.
struct Kubeconfig {
    server: String,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn read_kubeconfig(path: &Path) -> Result<Kubeconfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let field = |v: &serde_yaml::Value, name: &str| -> Result<String> {
        v[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("{}: no {name}", path.display()))
    };
    let pem = |v: &serde_yaml::Value, name: &str| -> Result<String> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(field(v, name)?)
            .with_context(|| format!("{}: {name} is not base64", path.display()))?;
        String::from_utf8(raw)
            .with_context(|| format!("{}: {name} is not PEM text", path.display()))
    };
    let cluster = &doc["clusters"][0]["cluster"];
    let user = &doc["users"][0]["user"];
    Ok(Kubeconfig {
        server: field(cluster, "server")?,
        ca_pem: pem(cluster, "certificate-authority-data")?,
        cert_pem: pem(user, "client-certificate-data")?,
        key_pem: pem(user, "client-key-data")?,
    })
}

impl Endpoint {
    /// The server and admin identity of the kubeconfig at `path`.
    pub fn from_kubeconfig(path: &Path) -> Result<Self> {
        let kc = read_kubeconfig(path)?;
        let hostport = kc
            .server
            .strip_prefix("https://")
            .map(|s| s.trim_end_matches('/'))
            .ok_or_else(|| {
                anyhow!(
                    "{}: server {:?} is not https://HOST:PORT",
                    path.display(),
                    kc.server
                )
            })?;
        let addr: SocketAddr = hostport.parse().with_context(|| {
            format!(
                "{}: server {:?} is not an IP:PORT",
                path.display(),
                kc.server
            )
        })?;
        let config =
            component_base::tls::client_config(&kc.ca_pem, Some((&kc.cert_pem, &kc.key_pem)))?;
        Ok(Self::with_config(addr, (*config).clone()))
    }

    /// An endpoint that trusts any server certificate and presents none: only for `/readyz`.
    pub fn insecure(addr: SocketAddr) -> Result<Self> {
        let provider = component_base::tls::provider();
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(
                component_base::tls::SkipServerVerification(provider),
            ))
            .with_no_client_auth();
        Ok(Self::with_config(addr, config))
    }

    fn with_config(addr: SocketAddr, mut config: ClientConfig) -> Self {
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            addr,
            host: addr.to_string().into(),
            connector: TlsConnector::from(Arc::new(config)),
            server_name: ServerName::IpAddress(addr.ip().into()),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens one keep-alive connection.
    pub async fn connect(&self) -> Result<Conn> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .with_context(|| format!("connecting to {}", self.addr))?;
        tcp.set_nodelay(true)?;
        // rustls reads at most 4 KiB per call: without a buffer under it, receiving a 7 MiB
        // LIST took ~1,800 recv calls, each contending for the socket with the server's sends
        // (CPU per LIST: bench 6.5-10 ms, mostly kernel). Writes pass straight through.
        let tcp = tokio::io::BufReader::with_capacity(READ_BUFFER, tcp);
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .with_context(|| format!("TLS handshake with {}", self.addr))?;
        let (sender, conn) = http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            // The connection ends when the server closes it or the sender is dropped; either
            // is reported to the worker through its next request.
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            host: self.host.clone(),
        })
    }
}

/// Bytes read from the socket at a time, at most.
const READ_BUFFER: usize = 256 * 1024;

/// One HTTP/1.1 keep-alive connection.
pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    host: Arc<str>,
}

impl Conn {
    async fn start(&mut self, req: &Req) -> Result<hyper::Response<Incoming>> {
        let mut builder = Request::builder()
            .method(req.method.clone())
            .uri(req.path.as_str())
            .header(header::HOST, &*self.host)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, "kubrs-bench");
        if let Some(ct) = req.content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        let request = builder.body(Full::new(req.body.clone()))?;
        self.sender.ready().await.context("connection closed")?;
        Ok(self.sender.send_request(request).await?)
    }

    /// Sends `req` and reads the whole response body.
    pub async fn send(&mut self, req: &Req) -> Result<Response> {
        let resp = self.start(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Response { status, body })
    }

    /// Sends `req` and receives the whole response body without keeping it: the status, the
    /// time until the response head arrived, and the body's length. For large responses (a LIST
    /// of thousands of objects) this measures the server's delivery without the client's extra
    /// copy of every frame into one contiguous buffer (7 MiB per LIST of 3,000 pods, on the same
    /// two cores as the server).
    pub async fn receive(&mut self, req: &Req) -> Result<(StatusCode, Duration, usize)> {
        let start = Instant::now();
        let resp = self.start(req).await?;
        let head = start.elapsed();
        let status = resp.status();
        let mut body = resp.into_body();
        let mut len = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                len += data.len();
            }
        }
        Ok((status, head, len))
    }

    /// Sends `req` and returns as soon as the response headers arrive, with the body still
    /// streaming (watches).
    pub async fn stream(&mut self, req: &Req) -> Result<(StatusCode, Incoming)> {
        let resp = self.start(req).await?;
        Ok((resp.status(), resp.into_body()))
    }

    /// Sends `req` and fails unless the status is one of `ok`.
    pub async fn expect(&mut self, req: &Req, ok: &[StatusCode]) -> Result<Response> {
        let resp = self.send(req).await?;
        if !ok.contains(&resp.status) {
            bail!("{} {}: {}", req.method, req.path, resp.describe());
        }
        Ok(resp)
    }
}
