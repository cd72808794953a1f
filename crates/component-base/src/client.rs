//! The API client every component uses: kube-rs's `Client` from a kubeconfig (or the usual
//! inference: `$KUBECONFIG`, `~/.kube/config`, in-cluster), over one multiplexed HTTP/2
//! connection as client-go uses, instead of kube-rs's default HTTP/1.1 pool.
//!
//! Why: kube-rs opens one HTTP/1.1 connection per concurrent request, and every watch holds
//! its connection for as long as it runs. A controller-manager watching ~40 kinds kept ~40 TLS
//! connections open, each with its buffers on both ends (client and API server). Over HTTP/2
//! all requests and watches of a process share one connection; ALPN still falls back to
//! HTTP/1.1 for servers that do not offer `h2`.
//!
//! The service stack is kube-rs's own (base URI, auth, extra headers, connect/read/write
//! timeouts), plus HTTP/2 keep-alive pings that notice a dead connection within ~45 s, as
//! client-go's `ReadIdleTimeout` + `PingTimeout` do.

use std::path::Path;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use tower::ServiceBuilder;

/// Errors building a client, with the file or step that failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading kubeconfig {path}: {source}")]
    Read {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig {path}: {source}")]
    Load {
        path: String,
        source: kube::config::KubeconfigError,
    },
    #[error("no usable client configuration: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("client TLS configuration: {0}")]
    Tls(#[source] kube::Error),
    #[error("client authentication: {0}")]
    Auth(#[source] kube::Error),
}

/// How often an idle HTTP/2 connection is pinged, and how long a ping may go unanswered.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(15);

/// The client configuration from `kubeconfig` (its current context), or inferred when `None`.
pub async fn config(kubeconfig: Option<&Path>) -> Result<kube::Config, ClientError> {
    match kubeconfig {
        Some(p) => {
            let path = p.display().to_string();
            let kc =
                kube::config::Kubeconfig::read_from(p).map_err(|source| ClientError::Read {
                    path: path.clone(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|source| ClientError::Load { path, source })
        }
        None => Ok(kube::Config::infer().await?),
    }
}

/// A client for `kubeconfig` (see [`config`]), speaking HTTP/2 where the server offers it.
pub async fn from_kubeconfig(kubeconfig: Option<&Path>) -> Result<kube::Client, ClientError> {
    build(config(kubeconfig).await?)
}

/// A client for `config` that multiplexes all requests and watches over one HTTP/2
/// connection (HTTP/1.1 when the server does not negotiate `h2`).
pub fn build(config: kube::Config) -> Result<kube::Client, ClientError> {
    // ALPN (`h2`, `http/1.1`) is set by the connector from the enabled versions.
    let tls = config.rustls_client_config().map_err(ClientError::Tls)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match &config.tls_server_name {
        Some(name) => match rustls::pki_types::ServerName::try_from(name.clone()) {
            Ok(name) => {
                builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            Err(e) => {
                return Err(ClientError::Tls(kube::Error::Service(
                    format!("invalid tls-server-name {name:?}: {e}").into(),
                )))
            }
        },
        None => builder,
    };
    let https = builder.enable_http1().enable_http2().wrap_connector(http);
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);

    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build(connector);
    let auth = config.auth_layer().map_err(ClientError::Auth)?;
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(auth)
        .layer(config.extra_headers_layer().map_err(ClientError::Auth)?)
        .map_err(tower::BoxError::from)
        .service(client);
    Ok(kube::Client::new(service, config.default_namespace))
}
