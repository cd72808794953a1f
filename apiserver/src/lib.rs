//! A Kubernetes-compatible API server: the REST API over HTTPS on an embedded store (default)
//! or etcd. `run` is what the binary and the workspace tests call.
//!
//! Request flow: [`server`] (TLS, HTTP/1.1+2) → [`handler`] (authn, routing, negotiation) →
//! [`registry`] (generic REST semantics + per-kind [`registry::strategy`]) → `storage`.
//! Logs, exec, attach, port-forward and the proxy subresources go from the handler to
//! [`proxy`], which reaches kubelets, pods and services where [`kubelet`] says.

pub mod allocator;
pub mod auth;
pub mod bootstrap;
pub mod codec;
pub mod discovery;
pub mod handler;
pub mod kubelet;
pub mod metrics;
pub mod proxy;
pub mod registry;
pub mod request;
pub mod resources;
pub mod review;
pub mod server;
pub mod serviceaccount;
pub mod table;

use anyhow::{bail, Context};
use clap::Parser;
use component_base::pki::Pki;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// The Kubernetes version this server reports (kubectl picks its behaviour by it).
pub const KUBE_VERSION: (&str, &str, &str) = ("1", "32", "v1.32.5");

#[derive(Debug, Clone, Parser)]
#[command(
    name = "apiserver",
    version,
    about = "Kubernetes-compatible API server"
)]
pub struct Args {
    /// Directory holding the embedded store, the cluster PKI and the admin kubeconfig.
    #[arg(long, default_value = "/var/lib/kubrs/apiserver")]
    pub data_dir: PathBuf,
    /// Comma-separated etcd client URLs. When set, objects live in etcd instead of the
    /// embedded store (the PKI and kubeconfig still live in --data-dir).
    #[arg(long, value_delimiter = ',')]
    pub etcd_servers: Vec<String>,
    /// Extra key prefix in etcd before `/registry` (to share one etcd between clusters).
    #[arg(long, default_value = "")]
    pub etcd_prefix: String,
    /// Serve LISTs from an in-memory watch cache of etcd (consistent reads from cache, as
    /// upstream's --watch-cache). Only with --etcd-servers; the embedded store is in memory.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub watch_cache: bool,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind_address: IpAddr,
    /// HTTPS port (0 picks a free one).
    #[arg(long, default_value_t = 6443)]
    pub secure_port: u16,
    /// Address advertised to the cluster (kubernetes Service endpoints, kubeconfig). Defaults
    /// to the bind address, or 127.0.0.1 when binding to all addresses.
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// CIDR Service ClusterIPs are allocated from.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub service_cluster_ip_range: String,
    /// Port range NodePorts are allocated from.
    #[arg(long, default_value = "30000-32767")]
    pub service_node_port_range: String,
    /// Static bearer tokens: CSV lines `token,user,uid,"group1,group2"`.
    #[arg(long)]
    pub token_auth_file: Option<PathBuf>,
    /// Extra names or addresses for the serving certificate.
    #[arg(long = "tls-san", value_delimiter = ',')]
    pub tls_sans: Vec<String>,
    /// Where to write the admin kubeconfig (default: <data-dir>/admin.kubeconfig).
    #[arg(long)]
    pub kubeconfig_out: Option<PathBuf>,
    /// Client certificate (PEM) presented to kubelets (default:
    /// <data-dir>/pki/apiserver-kubelet-client.crt, created at first start).
    #[arg(long, requires = "kubelet_client_key")]
    pub kubelet_client_certificate: Option<PathBuf>,
    /// Key (PEM) of --kubelet-client-certificate.
    #[arg(long, requires = "kubelet_client_certificate")]
    pub kubelet_client_key: Option<PathBuf>,
    /// CA bundle (PEM) kubelet serving certificates must chain to. When unset, kubelet serving
    /// certificates are not verified.
    #[arg(long)]
    pub kubelet_certificate_authority: Option<PathBuf>,
    /// Node address types used to reach kubelets, in order of preference.
    #[arg(long, value_delimiter = ',', default_value = kubelet::DEFAULT_PREFERRED_ADDRESS_TYPES)]
    pub kubelet_preferred_address_types: Vec<String>,
    /// Identifier of the service account token issuer (the `iss` claim). Repeat the flag to
    /// rotate issuers: the first one issues tokens, tokens of every one are accepted.
    #[arg(long = "service-account-issuer", default_value = serviceaccount::DEFAULT_ISSUER)]
    pub service_account_issuers: Vec<String>,
    /// Identifiers of the API (comma-separated): service account tokens must be issued for at
    /// least one of them to authenticate, and new tokens are for them unless a TokenRequest
    /// names audiences. Default: the first --service-account-issuer.
    #[arg(long, value_delimiter = ',')]
    pub api_audiences: Vec<String>,
    /// The `jwks_uri` of the discovery document at /.well-known/openid-configuration.
    /// Default: https://<advertise-address>:<port>/openid/v1/jwks.
    #[arg(long)]
    pub service_account_jwks_uri: Option<String>,
    /// Extend pod-bound tokens requested for 3607 seconds (the kubelet's default projected
    /// token) to one year, recording a warning time in the token instead, as upstream does to
    /// keep clients that never reload their token working.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub service_account_extend_token_expiration: bool,
}

/// Validated configuration (no I/O).
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub etcd_servers: Vec<String>,
    pub etcd_prefix: String,
    pub watch_cache: bool,
    pub bind: SocketAddr,
    pub advertise: IpAddr,
    pub service_range: String,
    pub node_ports: (u16, u16),
    pub token_auth_file: Option<PathBuf>,
    pub tls_sans: Vec<String>,
    pub kubeconfig_out: PathBuf,
    /// (certificate, key) presented to kubelets; `None` uses the PKI's.
    pub kubelet_client_cert: Option<(PathBuf, PathBuf)>,
    pub kubelet_ca: Option<PathBuf>,
    pub kubelet_preferred_address_types: Vec<String>,
    /// Issuers, first one signing (`--service-account-issuer`).
    pub service_account_issuers: Vec<String>,
    /// `--api-audiences`, defaulted to the first issuer.
    pub api_audiences: Vec<String>,
    /// `--service-account-jwks-uri`; `None` derives it from the advertised address.
    pub service_account_jwks_uri: Option<String>,
    pub service_account_extend_token_expiration: bool,
}

impl TryFrom<Args> for Config {
    type Error = anyhow::Error;

    fn try_from(a: Args) -> anyhow::Result<Self> {
        registry::allocator::IpRange::parse(&a.service_cluster_ip_range)
            .map_err(|e| anyhow::anyhow!("--service-cluster-ip-range: {e}"))?;
        let (lo, hi) = a
            .service_node_port_range
            .split_once('-')
            .and_then(|(l, h)| Some((l.trim().parse::<u16>().ok()?, h.trim().parse::<u16>().ok()?)))
            .with_context(|| {
                format!(
                    "--service-node-port-range {:?}: expected LOW-HIGH",
                    a.service_node_port_range
                )
            })?;
        if lo == 0 || lo > hi {
            bail!(
                "--service-node-port-range {:?}: LOW must be at least 1 and not above HIGH",
                a.service_node_port_range
            );
        }
        for t in &a.kubelet_preferred_address_types {
            if !kubelet::NODE_ADDRESS_TYPES.contains(&t.as_str()) {
                bail!(
                    "--kubelet-preferred-address-types: {t:?} is not one of {}",
                    kubelet::NODE_ADDRESS_TYPES.join(", ")
                );
            }
        }
        if a.kubelet_preferred_address_types.is_empty() {
            bail!("--kubelet-preferred-address-types: at least one address type is needed");
        }
        let issuers: Vec<String> = a
            .service_account_issuers
            .iter()
            .map(|s| s.trim().to_string())
            .collect();
        if issuers.is_empty() || issuers.iter().any(String::is_empty) {
            bail!("--service-account-issuer: an issuer may not be empty");
        }
        // Upstream: an issuer containing ':' must be a URL (the OIDC discovery issuer).
        for i in &issuers {
            if i.contains(':') && !(i.starts_with("https://") || i.starts_with("http://")) {
                bail!("--service-account-issuer {i:?} contained a ':' but was not a valid URL");
            }
        }
        if let Some(u) = &a.service_account_jwks_uri {
            if !u.starts_with("https://") {
                bail!("--service-account-jwks-uri {u:?}: must be an https URL");
            }
        }
        let mut api_audiences: Vec<String> = a
            .api_audiences
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        if api_audiences.is_empty() {
            api_audiences.push(issuers[0].clone());
        }
        let advertise = a
            .advertise_address
            .unwrap_or(if a.bind_address.is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                a.bind_address
            });
        Ok(Self {
            kubeconfig_out: a
                .kubeconfig_out
                .clone()
                .unwrap_or_else(|| a.data_dir.join("admin.kubeconfig")),
            data_dir: a.data_dir,
            etcd_servers: a
                .etcd_servers
                .into_iter()
                .filter(|s| !s.is_empty())
                .collect(),
            etcd_prefix: a.etcd_prefix,
            watch_cache: a.watch_cache,
            bind: SocketAddr::new(a.bind_address, a.secure_port),
            advertise,
            service_range: a.service_cluster_ip_range,
            node_ports: (lo, hi),
            token_auth_file: a.token_auth_file,
            tls_sans: a.tls_sans,
            kubelet_client_cert: a.kubelet_client_certificate.zip(a.kubelet_client_key),
            kubelet_ca: a.kubelet_certificate_authority,
            kubelet_preferred_address_types: a.kubelet_preferred_address_types,
            service_account_issuers: issuers,
            api_audiences,
            service_account_jwks_uri: a.service_account_jwks_uri,
            service_account_extend_token_expiration: a.service_account_extend_token_expiration,
        })
    }
}

/// A started server.
pub struct Running {
    pub addr: SocketAddr,
    pub kubeconfig: PathBuf,
    pub task: tokio::task::JoinHandle<()>,
}

async fn open_store(
    c: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<dyn storage::Storage>> {
    if c.etcd_servers.is_empty() {
        let dir = c.data_dir.join("store");
        let s = storage::embedded::EmbeddedStore::open(&dir)
            .with_context(|| format!("opening the embedded store in {}", dir.display()))?;
        Ok(Arc::new(s))
    } else {
        let s = storage::etcd::EtcdStore::connect(&c.etcd_servers, &c.etcd_prefix)
            .await
            .with_context(|| format!("connecting to etcd at {}", c.etcd_servers.join(",")))?;
        // Like kube-apiserver: compact etcd history every 5 minutes, keeping one interval.
        s.spawn_compactor(std::time::Duration::from_secs(300), shutdown.clone());
        if c.watch_cache {
            return Ok(Arc::new(storage::cache::CachedStore::start(
                s,
                shutdown.clone(),
            )));
        }
        Ok(Arc::new(s))
    }
}

/// Start the server: open storage, bootstrap, listen. Returns once it is ready.
pub async fn start(c: Config, shutdown: CancellationToken) -> anyhow::Result<Running> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&c.data_dir)
        .with_context(|| format!("creating {}", c.data_dir.display()))?;
    let listener = tokio::net::TcpListener::bind(c.bind)
        .await
        .with_context(|| format!("binding {}", c.bind))?;
    let addr = listener.local_addr()?;
    let mut sans: Vec<String> = c.tls_sans.clone();
    sans.push(c.advertise.to_string());
    if !c.bind.ip().is_unspecified() {
        sans.push(c.bind.ip().to_string());
    }
    let range =
        registry::allocator::IpRange::parse(&c.service_range).map_err(anyhow::Error::msg)?;
    sans.push(range.first().to_string());
    let pki =
        Pki::load_or_create(&c.data_dir.join("pki"), &sans).context("preparing the cluster PKI")?;
    let tls = component_base::tls::server_config(&pki)?;
    let kubelet = kubelet_client(&c, &pki)?;
    let tokens = match &c.token_auth_file {
        Some(p) => component_base::tokenfile::load_token_file(p)
            .with_context(|| format!("reading --token-auth-file {}", p.display()))?,
        None => Default::default(),
    };
    let store = open_store(&c, &shutdown).await?;
    let alloc = registry::allocator::Allocators::new(range, c.node_ports);
    let svc_prefix = resources::by_kind("", "Service")
        .expect("served")
        .key_prefix(None);
    for kv in store
        .list(&svc_prefix, &Default::default())
        .await
        .context("listing services")?
        .items
    {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&kv.value) {
            alloc.mark_existing(&v);
        }
    }
    let registry = Arc::new(registry::Registry::new(store.clone(), alloc));
    registry.namespaces.spawn(store, shutdown.clone());
    bootstrap::run(&registry, &c.advertise.to_string(), addr.port())
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap: {e}"))?;
    let server_url = format!("https://{}", SocketAddr::new(c.advertise, addr.port()));
    let (admin_cert, admin_key) = (
        pki.admin_cert_pem().to_string(),
        pki.admin_key_pem().to_string(),
    );
    component_base::kubeconfig::write_kubeconfig(
        &c.kubeconfig_out,
        "kubrs",
        &server_url,
        pki.ca_cert_pem(),
        component_base::kubeconfig::KubeconfigAuth::ClientCert {
            cert_pem: admin_cert,
            key_pem: admin_key,
        },
        None,
    )
    .with_context(|| format!("writing {}", c.kubeconfig_out.display()))?;
    let sa_tokens = Arc::new(
        serviceaccount::ServiceAccountTokens::new(
            pki.service_account_key_pem(),
            pki.service_account_public_key_pem(),
            serviceaccount::TokenSettings {
                issuers: c.service_account_issuers.clone(),
                api_audiences: c.api_audiences.clone(),
                jwks_uri: c.service_account_jwks_uri.clone().unwrap_or_else(|| {
                    format!(
                        "https://{}{}",
                        SocketAddr::new(c.advertise, addr.port()),
                        serviceaccount::JWKS_PATH
                    )
                }),
                extend_expiration: c.service_account_extend_token_expiration,
            },
        )
        .context("loading the service-account signing key")?,
    );
    let authn =
        auth::Authenticator::new(tokens).with_service_accounts(sa_tokens.clone(), registry.clone());
    let state = Arc::new(handler::State {
        registry,
        kubelet,
        authn,
        sa_tokens,
        authz: Box::new(auth::AlwaysAllow),
        metrics: metrics::Metrics::new(),
        server_address: SocketAddr::new(c.advertise, addr.port()).to_string(),
        ready: Default::default(),
        shutdown: shutdown.clone(),
        version: json!({
            "major": KUBE_VERSION.0,
            "minor": KUBE_VERSION.1,
            "gitVersion": format!("{}+kubrs", KUBE_VERSION.2),
            "gitCommit": env!("CARGO_PKG_VERSION"),
            "gitTreeState": "clean",
            "buildDate": "2026-11-30T00:00:00Z",
            "goVersion": "rust",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, if std::env::consts::ARCH == "x86_64" { "amd64" } else if std::env::consts::ARCH == "aarch64" { "arm64" } else { std::env::consts::ARCH }),
        }),
    });
    state.ready.store(true, Ordering::Release);
    tracing::info!(addr = %addr, kubeconfig = %c.kubeconfig_out.display(), startup_ms = t0.elapsed().as_millis() as u64, "API server ready");
    let task = tokio::spawn(server::serve(listener, tls, state, shutdown));
    Ok(Running {
        addr,
        kubeconfig: c.kubeconfig_out.clone(),
        task,
    })
}

/// The kubelet client from the `--kubelet-*` flags (or the PKI's certificate).
fn kubelet_client(c: &Config, pki: &Pki) -> anyhow::Result<kubelet::KubeletClient> {
    let read = |p: &PathBuf, flag: &str| {
        std::fs::read_to_string(p).with_context(|| format!("reading {flag} {}", p.display()))
    };
    let (cert_pem, key_pem) = match &c.kubelet_client_cert {
        Some((cert, key)) => (
            read(cert, "--kubelet-client-certificate")?,
            read(key, "--kubelet-client-key")?,
        ),
        None => (
            pki.kubelet_client_cert_pem().to_string(),
            pki.kubelet_client_key_pem().to_string(),
        ),
    };
    let ca_pem = match &c.kubelet_ca {
        Some(p) => Some(read(p, "--kubelet-certificate-authority")?),
        None => None,
    };
    kubelet::KubeletClient::new(&kubelet::KubeletClientConfig {
        cert_pem,
        key_pem,
        ca_pem,
        preferred_address_types: c.kubelet_preferred_address_types.clone(),
        default_port: kubelet::DEFAULT_KUBELET_PORT,
    })
    .context("configuring the kubelet client")
}

/// Run until `shutdown` is cancelled.
pub async fn run(c: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let running = start(c, shutdown).await?;
    println!("API server listening on https://{}", running.addr);
    println!("admin kubeconfig: {}", running.kubeconfig.display());
    running.task.await?;
    Ok(())
}
