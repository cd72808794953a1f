//! The API server's side of the node connection: the TLS identity it presents to kubelets, how
//! a node's kubelet is found (upstream's `NodeConnectionInfoGetter`), and where every
//! node-facing subresource goes (upstream's `LogLocation`, `ExecLocation`, `AttachLocation`,
//! `PortForwardLocation` and the pod, service and node `ResourceLocation`s).
//!
//! Resolution validates as upstream does — the pod exists, the container is one of the pod's,
//! the pod is bound — and yields an [`Upstream`]; [`crate::proxy`] does the network I/O. The
//! kubelet paths and the query each one receives are upstream's, so a kubelet written to
//! upstream's server API serves them:
//!
//! | subresource | kubelet request |
//! |---|---|
//! | `pods/log` | `GET /containerLogs/<ns>/<pod>/<container>?follow=true&limitBytes=N&previous=true&sinceSeconds=N&sinceTime=RFC3339&tailLines=N&timestamps=true` |
//! | `pods/exec` | `/exec/<ns>/<pod>/<container>?command=..&command=..&error=1&input=1&output=1&tty=1` |
//! | `pods/attach` | `/attach/<ns>/<pod>/<container>?error=1&input=1&output=1&tty=1` |
//! | `pods/portforward` | `/portForward/<ns>/<pod>?port=80%2C443` (no query when the client names no ports) |
//!
//! The client's `stdin`/`stdout`/`stderr`/`tty=true` become upstream's kubelet parameters
//! `input`/`output`/`error`/`tty=1`. Query keys are sorted and only present when set, values
//! escaped as Go's `url.Values.Encode` does. Exec, attach and port-forward keep the client's
//! method and upgrade headers (WebSocket `v5.channel.k8s.io`/`v4.channel.k8s.io`,
//! `SPDY/3.1+portforward.k8s.io`, or SPDY/3.1 with `X-Stream-Protocol-Version`): the kubelet
//! answers the upgrade itself.

use crate::registry::{ListParams, Registry};
use crate::request::{Query, Target};
use crate::resources;
use apimachinery::errors::{ApiError, FieldError, Reason};
use apimachinery::selectors::LabelSelector;
use component_base::tls::{parse_certs, parse_key, TlsError};
use rustls::ClientConfig;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::Arc;

/// The kubelet port used when a Node does not report `status.daemonEndpoints.kubeletEndpoint`.
pub const DEFAULT_KUBELET_PORT: u16 = 10250;
/// Default `--kubelet-preferred-address-types` (kubeadm's choice).
pub const DEFAULT_PREFERRED_ADDRESS_TYPES: &str = "InternalIP,ExternalIP,Hostname";
/// Every node address type (`v1.NodeAddressType`).
pub const NODE_ADDRESS_TYPES: &[&str] = &[
    "Hostname",
    "InternalDNS",
    "InternalIP",
    "ExternalDNS",
    "ExternalIP",
];

/// Why a connect request failed, rendered as a `Status`. Unlike [`ApiError`] the reason may be
/// absent: upstream answers plain Go errors (`error dialing backend: ...`) as a 500 Status
/// without a reason, which kubectl prints as `Error from server: <message>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub code: u16,
    pub reason: Option<Reason>,
    pub message: String,
    pub details: Option<Value>,
}

impl Failure {
    /// A reason-less 500, as upstream renders errors that are not API statuses.
    pub fn unknown(message: impl Into<String>) -> Self {
        Self {
            code: 500,
            reason: None,
            message: message.into(),
            details: None,
        }
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "code": self.code,
        });
        if let Some(r) = self.reason {
            s["reason"] = json!(r.as_str());
        }
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }

    /// Upstream's `GenericHttpResponseChecker`: a non-2xx answer from a kubelet (or other
    /// backend) streamed by the API server becomes this error; `body` is the start of its body.
    pub fn from_backend(code: u16, body: &str, resource: &str, name: &str) -> Self {
        match code {
            500 => ApiError::internal(body).into(),
            400 => ApiError::bad_request(body).into(),
            _ => Self::generic_server_response(code, resource, name, body),
        }
    }

    /// Upstream's `errors.NewGenericServerResponse` with an empty verb.
    fn generic_server_response(code: u16, resource: &str, name: &str, body: &str) -> Self {
        let (reason, message) = match code {
            409 => (Some(Reason::Conflict), "the server reported a conflict".to_string()),
            404 => (
                Some(Reason::NotFound),
                "the server could not find the requested resource".to_string(),
            ),
            401 => (
                Some(Reason::Unauthorized),
                "the server has asked for the client to provide credentials".to_string(),
            ),
            403 => (Some(Reason::Forbidden), body.to_string()),
            405 => (
                Some(Reason::MethodNotAllowed),
                "the server does not allow this method on the requested resource".to_string(),
            ),
            406 | 415 => (
                Some(if code == 406 {
                    Reason::NotAcceptable
                } else {
                    Reason::UnsupportedMediaType
                }),
                "the server was unable to respond with a content type that the client supports"
                    .to_string(),
            ),
            422 => (
                Some(Reason::Invalid),
                "the server rejected our request due to an error in our request".to_string(),
            ),
            503 => (
                Some(Reason::ServiceUnavailable),
                "the server is currently unable to handle the request".to_string(),
            ),
            504 => (
                Some(Reason::Timeout),
                "the server was unable to return a response in the time allotted, but may still be processing the request".to_string(),
            ),
            429 => (
                Some(Reason::TooManyRequests),
                "the server has received too many requests and has asked us to try again later"
                    .to_string(),
            ),
            c if c >= 500 => (
                Some(Reason::InternalError),
                format!("an error on the server ({body:?}) has prevented the request from succeeding"),
            ),
            c => (
                None,
                format!("the server responded with the status code {c} but did not return more information"),
            ),
        };
        Self {
            code,
            reason,
            message: format!("{message} ( {resource} {name})"),
            details: Some(json!({"name": name, "kind": resource})),
        }
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Self {
            code: e.code,
            reason: Some(e.reason),
            message: e.message,
            details: e.details,
        }
    }
}

/// How a backend is reached.
#[derive(Clone)]
pub enum Transport {
    Http,
    Https(Arc<ClientConfig>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Http => "http",
            Self::Https(_) => "https",
        })
    }
}

/// Where a proxied request goes: one host and port, a path and an encoded query.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub transport: Transport,
    /// An IP address (without brackets) or a host name.
    pub host: String,
    pub port: u16,
    /// The escaped path; may be empty (the proxy subresources redirect that to `/`).
    pub path: String,
    /// The encoded query, without `?`; empty for none.
    pub query: String,
}

impl Upstream {
    pub fn scheme(&self) -> &'static str {
        match self.transport {
            Transport::Http => "http",
            Transport::Https(_) => "https",
        }
    }

    /// `host:port`, with IPv6 addresses in brackets.
    pub fn authority(&self) -> String {
        join_host_port(&self.host, self.port)
    }

    /// The request target: path (at least `/`) and query.
    pub fn path_and_query(&self) -> String {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        if self.query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{}", self.query)
        }
    }

    /// The full URL, as upstream prints it in errors (`Get "https://10.0.0.5:10250/..."`).
    pub fn url(&self) -> String {
        let mut u = format!("{}://{}{}", self.scheme(), self.authority(), self.path);
        if !self.query.is_empty() {
            u.push('?');
            u.push_str(&self.query);
        }
        u
    }
}

/// `net.JoinHostPort`.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Settings for [`KubeletClient::new`], from the `--kubelet-*` flags.
#[derive(Clone)]
pub struct KubeletClientConfig {
    /// The client certificate and key (PEM) presented to kubelets.
    pub cert_pem: String,
    pub key_pem: String,
    /// CA bundle (PEM) that kubelet serving certificates must chain to; `None` skips the check
    /// (upstream's behaviour without `--kubelet-certificate-authority`).
    pub ca_pem: Option<String>,
    /// Node address types to try, in order.
    pub preferred_address_types: Vec<String>,
    pub default_port: u16,
}

/// What the API server needs to talk to kubelets and to proxy to pods and services.
pub struct KubeletClient {
    /// Presents the client certificate; verifies kubelets when a CA was configured.
    tls: Arc<ClientConfig>,
    /// Presents the client certificate; never verifies (`insecureSkipTLSVerifyBackend`).
    insecure_tls: Arc<ClientConfig>,
    /// For `https:` pod and service proxying: no client certificate, no verification (upstream's
    /// proxy transport).
    proxy_tls: Arc<ClientConfig>,
    preferred: Vec<String>,
    default_port: u16,
}

impl KubeletClient {
    pub fn new(c: &KubeletClientConfig) -> Result<Self, TlsError> {
        let identity = Some((c.cert_pem.as_str(), c.key_pem.as_str()));
        let tls = match &c.ca_pem {
            Some(ca) => component_base::tls::client_config(ca, identity)?,
            None => unverified_client_config(identity)?,
        };
        Ok(Self {
            tls,
            insecure_tls: unverified_client_config(identity)?,
            proxy_tls: unverified_client_config(None)?,
            preferred: c.preferred_address_types.clone(),
            default_port: c.default_port,
        })
    }

    /// Where the kubelet of `node` listens: the preferred address and the reported port.
    pub async fn node_address(&self, reg: &Registry, node: &str) -> Result<(String, u16), Failure> {
        let n = reg.get(&target("", "nodes", None), node).await?;
        let host = preferred_address(&n, &self.preferred)?;
        let port = n
            .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
            .and_then(Value::as_i64)
            .filter(|p| (1..=i64::from(u16::MAX)).contains(p))
            .map(|p| p as u16)
            .unwrap_or(self.default_port);
        Ok((host, port))
    }

    /// A request to the kubelet at `host:port`.
    pub fn upstream(
        &self,
        (host, port): (String, u16),
        path: String,
        query: String,
        insecure: bool,
    ) -> Upstream {
        Upstream {
            transport: Transport::Https(if insecure {
                self.insecure_tls.clone()
            } else {
                self.tls.clone()
            }),
            host,
            port,
            path,
            query,
        }
    }

    fn proxy_transport(&self, scheme: &str) -> Transport {
        if scheme == "https" {
            Transport::Https(self.proxy_tls.clone())
        } else {
            Transport::Http
        }
    }

    /// Upstream's pod `ResourceLocation`: `id` is `name`, `name:port` or `scheme:name:port`;
    /// without a port, the first declared container port (or the scheme's default).
    pub async fn pod_location(
        &self,
        reg: &Registry,
        ns: &str,
        id: &str,
    ) -> Result<Upstream, Failure> {
        let (scheme, name, port) = split_scheme_name_port(id)
            .ok_or_else(|| ApiError::bad_request(format!("invalid pod request {id:?}")))?;
        let pod = reg.get(&target("", "pods", Some(ns)), name).await?;
        let port = pod_port(&pod, port)?;
        let ip = pod
            .pointer("/status/podIPs/0/ip")
            .or_else(|| pod.pointer("/status/podIP"))
            .and_then(Value::as_str)
            .unwrap_or("");
        match ip.parse::<IpAddr>() {
            Ok(a) if is_global_unicast(a) => {}
            _ => return Err(ApiError::bad_request("address not allowed").into()),
        }
        Ok(Upstream {
            transport: self.proxy_transport(scheme),
            host: ip.to_string(),
            port: port.unwrap_or(default_port(scheme)),
            path: String::new(),
            query: String::new(),
        })
    }

    /// Upstream's service `ResourceLocation`: a random ready endpoint address whose pod still
    /// has that IP, on the endpoint port named like the requested service port.
    pub async fn service_location(
        &self,
        reg: &Registry,
        ns: &str,
        id: &str,
    ) -> Result<Upstream, Failure> {
        let (scheme, name, port) = split_scheme_name_port(id)
            .ok_or_else(|| ApiError::bad_request(format!("invalid service request {id:?}")))?;
        // Endpoint ports carry the service port's name, so a port number is mapped to it.
        let mut port_name = port.to_string();
        if let Ok(n) = port.parse::<i64>() {
            let svc = reg.get(&target("", "services", Some(ns)), name).await?;
            let found = svc
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|p| p.get("port").and_then(Value::as_i64) == Some(n));
            match found {
                Some(p) => {
                    port_name = p
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                }
                None => {
                    return Err(ApiError::new(
                        Reason::ServiceUnavailable,
                        format!("no service port {n} found for service {name:?}"),
                    )
                    .into())
                }
            }
        }
        let subsets = endpoint_subsets(reg, ns, name).await?;
        if subsets.is_empty() {
            return Err(ApiError::new(
                Reason::ServiceUnavailable,
                format!("no endpoints available for service {name:?}"),
            )
            .into());
        }
        let ss_seed = rand::random_range(0..subsets.len());
        for i in 0..subsets.len() {
            let ss = &subsets[(ss_seed + i) % subsets.len()];
            if ss.addresses.is_empty() {
                continue;
            }
            for (pname, pnum) in &ss.ports {
                if *pname != port_name {
                    continue;
                }
                let addr_seed = rand::random_range(0..ss.addresses.len());
                for j in 0..ss.addresses.len() {
                    let addr = &ss.addresses[(addr_seed + j) % ss.addresses.len()];
                    match valid_address(reg, ns, addr).await {
                        Ok(()) => {
                            return Ok(Upstream {
                                transport: self.proxy_transport(scheme),
                                host: addr.ip.clone(),
                                port: *pnum,
                                path: String::new(),
                                query: String::new(),
                            })
                        }
                        Err(why) => {
                            tracing::debug!(service = %name, ip = %addr.ip, %why, "skipping endpoint address")
                        }
                    }
                }
            }
        }
        Err(ApiError::new(
            Reason::ServiceUnavailable,
            format!("no endpoints available for service {id:?}"),
        )
        .into())
    }

    /// Upstream's node `ResourceLocation`: the kubelet (with the kubelet client identity) when
    /// no port or the kubelet's port is named, else `scheme://<node address>:<port>`. Node
    /// addresses that resolve to anything but global unicast addresses are refused.
    pub async fn node_location(&self, reg: &Registry, id: &str) -> Result<Upstream, Failure> {
        let (scheme, name, port) = split_scheme_name_port(id)
            .ok_or_else(|| ApiError::bad_request(format!("invalid node request {id:?}")))?;
        let (host, kubelet_port) = self.node_address(reg, name).await?;
        proxyable_hostname(&host)
            .await
            .map_err(|e| Failure::from(ApiError::bad_request(e)))?;
        if port.is_empty() || port == kubelet_port.to_string() {
            return Ok(self.upstream((host, kubelet_port), String::new(), String::new(), false));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| Failure::unknown(format!("dial tcp: lookup tcp/{port}: unknown port")))?;
        Ok(Upstream {
            transport: self.proxy_transport(scheme),
            host,
            port,
            path: String::new(),
            query: String::new(),
        })
    }
}

/// A target for reading objects of a core or grouped resource.
pub fn target(group: &str, plural: &str, ns: Option<&str>) -> Target {
    let resource = resources::RESOURCES
        .iter()
        .find(|r| r.group == group && r.plural == plural)
        .expect("resource is served");
    Target {
        resource,
        version: resource.storage_version().to_string(),
        namespace: ns.map(str::to_string),
        name: None,
        subresource: None,
        subpath: None,
    }
}

/// Upstream's `GetPreferredNodeAddress`.
pub fn preferred_address(node: &Value, types: &[String]) -> Result<String, Failure> {
    let addrs: &[Value] = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    for t in types {
        if let Some(a) = addrs
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(t.as_str()))
        {
            return Ok(a
                .get("address")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string());
        }
    }
    let known: Vec<String> = addrs
        .iter()
        .map(|a| {
            format!(
                "{{{} {}}}",
                a.get("type").and_then(Value::as_str).unwrap_or(""),
                a.get("address").and_then(Value::as_str).unwrap_or("")
            )
        })
        .collect();
    Err(Failure::unknown(format!(
        "no preferred addresses found; known addresses: [{}]",
        known.join(" ")
    )))
}

/// The node a pod is bound to, if any.
pub fn pod_node(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
}

/// Names of a pod's init, app and ephemeral containers, in upstream's `VisitContainers` order.
fn container_names(pod: &Value) -> Vec<&str> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect()
}

/// Upstream's `validateContainer`: the named container must be one of the pod's; an unnamed
/// one defaults to the only app container.
pub fn validate_container(pod: &Value, container: Option<&str>) -> Result<String, ApiError> {
    let pod_name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    match container.filter(|c| !c.is_empty()) {
        Some(c) => {
            if container_names(pod).contains(&c) {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {pod_name}"
                )))
            }
        }
        None => {
            let apps: Vec<&str> = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect();
            match apps.as_slice() {
                [only] => Ok(only.to_string()),
                [] => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}"
                ))),
                _ => Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    container_names(pod).join(" ")
                ))),
            }
        }
    }
}

/// A boolean connect option as upstream's query conversion reads it.
fn flag(q: &Query, key: &str) -> bool {
    match q.get(key) {
        None => false,
        Some(v) => !(v.is_empty() || v == "0" || v.eq_ignore_ascii_case("false")),
    }
}

/// `PodLogOptions` from the query, validated like upstream's `ValidatePodLogOptions`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LogOptions {
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub since_seconds: Option<i64>,
    /// RFC 3339, normalised to UTC seconds.
    pub since_time: Option<String>,
    pub tail_lines: Option<i64>,
    pub limit_bytes: Option<i64>,
    pub insecure_skip_tls_verify_backend: bool,
}

impl LogOptions {
    pub fn from_query(q: &Query, pod: &str) -> Result<Self, ApiError> {
        let since_time = match q.get("sinceTime").filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(
                chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|e| {
                        ApiError::bad_request(format!("invalid value for sinceTime: {s:?}: {e}"))
                    })?
                    .with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            ),
        };
        let o = Self {
            container: q
                .get("container")
                .filter(|c| !c.is_empty())
                .map(str::to_string),
            follow: flag(q, "follow"),
            previous: flag(q, "previous"),
            timestamps: flag(q, "timestamps"),
            since_seconds: q.int("sinceSeconds")?,
            since_time,
            tail_lines: q.int("tailLines")?,
            limit_bytes: q.int("limitBytes")?,
            insecure_skip_tls_verify_backend: flag(q, "insecureSkipTLSVerifyBackend"),
        };
        let mut errs = Vec::new();
        if let Some(t) = o.tail_lines.filter(|t| *t < 0) {
            errs.push(FieldError::invalid(
                "tailLines",
                json!(t),
                "must be greater than or equal to 0",
            ));
        }
        if let Some(l) = o.limit_bytes.filter(|l| *l < 1) {
            errs.push(FieldError::invalid(
                "limitBytes",
                json!(l),
                "must be greater than 0",
            ));
        }
        match (o.since_seconds, &o.since_time) {
            (Some(_), Some(_)) => errs.push(FieldError::forbidden(
                "",
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            )),
            (Some(s), None) if s < 1 => errs.push(FieldError::invalid(
                "sinceSeconds",
                json!(s),
                "must be greater than 0",
            )),
            _ => {}
        }
        if errs.is_empty() {
            Ok(o)
        } else {
            Err(ApiError::invalid("PodLogOptions", "", pod, &errs))
        }
    }

    /// The query the kubelet's `/containerLogs` receives.
    pub fn kubelet_query(&self) -> String {
        let mut p: Vec<(&str, String)> = Vec::new();
        if self.follow {
            p.push(("follow", "true".into()));
        }
        if self.previous {
            p.push(("previous", "true".into()));
        }
        if self.timestamps {
            p.push(("timestamps", "true".into()));
        }
        if let Some(s) = self.since_seconds {
            p.push(("sinceSeconds", s.to_string()));
        }
        if let Some(t) = &self.since_time {
            p.push(("sinceTime", t.clone()));
        }
        if let Some(t) = self.tail_lines {
            p.push(("tailLines", t.to_string()));
        }
        if let Some(l) = self.limit_bytes {
            p.push(("limitBytes", l.to_string()));
        }
        encode_query(p)
    }
}

/// The streaming subresources the kubelet serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Exec,
    Attach,
    PortForward,
}

impl Stream {
    pub fn parse(sub: &str) -> Option<Self> {
        match sub {
            "exec" => Some(Self::Exec),
            "attach" => Some(Self::Attach),
            "portforward" => Some(Self::PortForward),
            _ => None,
        }
    }

    /// The kubelet query for this request (upstream's `streamParams`): `stdin`, `stdout`,
    /// `stderr`, `tty` become `input`, `output`, `error`, `tty` = `1`; `command` is kept;
    /// port-forward `ports` become one comma-separated `port`.
    pub fn kubelet_query(self, q: &Query) -> Result<String, ApiError> {
        let mut p: Vec<(&str, String)> = Vec::new();
        match self {
            Self::Exec | Self::Attach => {
                for (param, kubelet) in [
                    ("stdin", "input"),
                    ("stdout", "output"),
                    ("stderr", "error"),
                    ("tty", "tty"),
                ] {
                    if flag(q, param) {
                        p.push((kubelet, "1".into()));
                    }
                }
                if self == Self::Exec {
                    p.extend(
                        q.all("command")
                            .into_iter()
                            .map(|c| ("command", c.to_string())),
                    );
                }
            }
            Self::PortForward => {
                let mut ports = Vec::new();
                for v in q.all("ports") {
                    for s in v.split(',').filter(|s| !s.is_empty()) {
                        let n: i32 = s.trim().parse().map_err(|_| {
                            ApiError::bad_request(format!(
                                "invalid value for ports: {s:?} is not an integer"
                            ))
                        })?;
                        ports.push(n.to_string());
                    }
                }
                if !ports.is_empty() {
                    p.push(("port", ports.join(",")));
                }
            }
        }
        Ok(encode_query(p))
    }
}

/// Go's `url.Values.Encode`: keys sorted (stable, so repeated keys keep their order), each
/// `QueryEscape`d.
pub fn encode_query(mut pairs: Vec<(&str, String)>) -> String {
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", query_escape(k), query_escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Go's `url.QueryEscape`.
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Upstream's `SplitSchemeNamePort`: `name`, `name:port` or `scheme:name:port`, with scheme
/// empty, `http` or `https`.
pub fn split_scheme_name_port(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [n] => ("", *n, ""),
        [n, p] => ("", *n, *p),
        [s, n, p] => (*s, *n, *p),
        _ => return None,
    };
    (!name.is_empty() && matches!(scheme, "" | "http" | "https")).then_some((scheme, name, port))
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" {
        443
    } else {
        80
    }
}

/// The port a pod proxy request names: a number, the name of a container port, or (when
/// empty) the first declared container port.
fn pod_port(pod: &Value, port: &str) -> Result<Option<u16>, Failure> {
    let ports = || {
        pod.pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| {
                c.get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
    };
    if port.is_empty() {
        return Ok(pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|c| c.pointer("/ports/0/containerPort").and_then(Value::as_u64))
            .map(|p| p as u16));
    }
    if let Ok(n) = port.parse::<u16>() {
        return Ok(Some(n));
    }
    ports()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(port))
        .and_then(|p| p.get("containerPort").and_then(Value::as_u64))
        .map(|p| Some(p as u16))
        .ok_or_else(|| {
            ApiError::new(
                Reason::ServiceUnavailable,
                format!("error trying to reach service: dial tcp: lookup tcp/{port}: unknown port"),
            )
            .into()
        })
}

/// One subset of ready addresses and its ports, from an Endpoints object or EndpointSlices.
#[derive(Debug, Default)]
struct Subset {
    addresses: Vec<Address>,
    /// (name, port)
    ports: Vec<(String, u16)>,
}

#[derive(Debug)]
struct Address {
    ip: String,
    /// (kind, namespace, name) of `targetRef`.
    target: Option<(String, String, String)>,
}

fn address(ip: &str, target_ref: Option<&Value>) -> Address {
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    Address {
        ip: ip.to_string(),
        target: target_ref.map(|t| (s(t, "kind"), s(t, "namespace"), s(t, "name"))),
    }
}

fn ports_of(v: Option<&Value>) -> Vec<(String, u16)> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = p.get("port").and_then(Value::as_u64)?;
            Some((
                p.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                u16::try_from(port).ok()?,
            ))
        })
        .collect()
}

/// The service's ready endpoints: its Endpoints object, or — when there is none — the
/// EndpointSlices labelled with its name (one subset per slice; ready endpoints only).
async fn endpoint_subsets(reg: &Registry, ns: &str, name: &str) -> Result<Vec<Subset>, Failure> {
    match reg.get(&target("", "endpoints", Some(ns)), name).await {
        Ok(eps) => Ok(eps
            .get("subsets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|ss| Subset {
                addresses: ss
                    .get("addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|a| Some(address(a.get("ip")?.as_str()?, a.get("targetRef"))))
                    .collect(),
                ports: ports_of(ss.get("ports")),
            })
            .collect()),
        Err(e) if e.reason == Reason::NotFound => {
            let selector = LabelSelector::parse(&format!("kubernetes.io/service-name={name}"))
                .map_err(|_| e.clone())?;
            let slices = reg
                .list(
                    &target("discovery.k8s.io", "endpointslices", Some(ns)),
                    &ListParams {
                        label: Some(selector),
                        ..Default::default()
                    },
                )
                .await?;
            if slices.items.is_empty() {
                return Err(e.into());
            }
            Ok(slices
                .items
                .iter()
                .filter_map(|i| serde_json::from_slice::<Value>(&i.to_vec()).ok())
                .map(|s| Subset {
                    addresses: s
                        .get("endpoints")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter(|ep| {
                            ep.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false)
                        })
                        .filter_map(|ep| {
                            Some(address(
                                ep.pointer("/addresses/0")?.as_str()?,
                                ep.get("targetRef"),
                            ))
                        })
                        .collect(),
                    ports: ports_of(s.get("ports")),
                })
                .collect())
        }
        Err(e) => Err(e.into()),
    }
}

/// Upstream's `isValidAddress`: the address must point at a pod of this namespace that still
/// has that IP.
async fn valid_address(reg: &Registry, ns: &str, addr: &Address) -> Result<(), String> {
    let Some((_, target_ns, pod_name)) = &addr.target else {
        return Err("address has no target ref".into());
    };
    if target_ns != ns {
        return Err("address namespace doesn't match context namespace".into());
    }
    let pod = reg
        .get(&target("", "pods", Some(ns)), pod_name)
        .await
        .map_err(|e| e.message)?;
    let ips: Vec<&str> = pod
        .pointer("/status/podIPs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("ip").and_then(Value::as_str))
        .collect();
    if ips.contains(&addr.ip.as_str()) {
        Ok(())
    } else {
        Err(format!(
            "pod ip(s) doesn't match endpoint ip, skipping: {ips:?} vs {} ({ns}/{pod_name})",
            addr.ip
        ))
    }
}

/// Go's `net.IP.IsGlobalUnicast`.
pub fn is_global_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_loopback()
                || v4.is_multicast()
                || v4.is_link_local())
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_global_unicast(IpAddr::V4(v4)),
            None => {
                !(v6.is_unspecified()
                    || v6.is_loopback()
                    || v6.is_multicast()
                    || (v6.segments()[0] & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// Upstream's `isProxyableHostname`: every address the name resolves to must be global unicast.
async fn proxyable_hostname(host: &str) -> Result<(), String> {
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| format!("lookup {host}: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err("no addresses for hostname".into());
    }
    if addrs.iter().all(|a| is_global_unicast(*a)) {
        Ok(())
    } else {
        Err("address not allowed".into())
    }
}

/// A client configuration that checks the handshake signatures but not the server's
/// certificate chain or name.
fn unverified_client_config(identity: Option<(&str, &str)>) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = component_base::tls::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(component_base::tls::SkipServerVerification(
            provider,
        )));
    let config = match identity {
        Some((cert, key)) => builder.with_client_auth_cert(
            parse_certs(cert, "kubelet client certificate")?,
            parse_key(key, "kubelet client key")?,
        )?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: &[&str], init: &[&str]) -> Value {
        let c = |n: &&str| json!({"name": n});
        json!({"metadata": {"name": "web"}, "spec": {
            "containers": containers.iter().map(c).collect::<Vec<_>>(),
            "initContainers": init.iter().map(c).collect::<Vec<_>>(),
        }})
    }

    /// (app containers, init containers, requested container, chosen container or error).
    type ContainerCase<'a> = (
        &'a [&'a str],
        &'a [&'a str],
        Option<&'a str>,
        Result<&'a str, &'a str>,
    );

    #[test]
    fn container_validation_matches_upstream_messages() {
        let cases: &[ContainerCase] = &[
            (&["a"], &[], None, Ok("a")),
            (&["a"], &[], Some(""), Ok("a")),
            (&["a", "b"], &[], Some("b"), Ok("b")),
            (&["a"], &["i"], Some("i"), Ok("i")),
            (
                &[],
                &[],
                None,
                Err("a container name must be specified for pod web"),
            ),
            (
                &["a", "b"],
                &["i"],
                None,
                Err("a container name must be specified for pod web, choose one of: [i a b]"),
            ),
            (
                &["a", "b"],
                &[],
                Some("c"),
                Err("container c is not valid for pod web"),
            ),
        ];
        for (apps, init, asked, want) in cases {
            let got = validate_container(&pod(apps, init), *asked);
            match want {
                Ok(w) => assert_eq!(got.unwrap(), *w, "{apps:?} {asked:?}"),
                Err(m) => {
                    let e = got.unwrap_err();
                    assert_eq!(
                        (e.code, e.message.as_str()),
                        (400, *m),
                        "{apps:?} {asked:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn log_options_become_upstreams_sorted_kubelet_query() {
        let q = Query::parse(Some(
            "container=c1&timestamps=true&tailLines=2&follow=true&sinceTime=2024-05-01T10:00:00%2B02:00&limitBytes=10&insecureSkipTLSVerifyBackend=true",
        ));
        let o = LogOptions::from_query(&q, "web").unwrap();
        assert_eq!(o.container.as_deref(), Some("c1"));
        assert!(o.insecure_skip_tls_verify_backend);
        assert_eq!(
            o.kubelet_query(),
            "follow=true&limitBytes=10&sinceTime=2024-05-01T08%3A00%3A00Z&tailLines=2&timestamps=true"
        );
        assert_eq!(
            LogOptions::from_query(&Query::parse(Some("container=c")), "web")
                .unwrap()
                .kubelet_query(),
            ""
        );
    }

    #[test]
    fn log_options_are_validated_like_upstream() {
        let cases = [
            (
                "tailLines=-1",
                "PodLogOptions \"web\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0",
            ),
            (
                "limitBytes=0",
                "PodLogOptions \"web\" is invalid: limitBytes: Invalid value: 0: must be greater than 0",
            ),
            (
                "sinceSeconds=0",
                "PodLogOptions \"web\" is invalid: sinceSeconds: Invalid value: 0: must be greater than 0",
            ),
        ];
        for (q, want) in cases {
            let e = LogOptions::from_query(&Query::parse(Some(q)), "web").unwrap_err();
            assert_eq!((e.code, e.message.as_str()), (422, want), "{q}");
        }
        let both = LogOptions::from_query(
            &Query::parse(Some("sinceSeconds=5&sinceTime=2024-05-01T10:00:00Z")),
            "web",
        )
        .unwrap_err();
        assert_eq!(both.code, 422);
        assert!(both
            .message
            .contains("at most one of `sinceTime` or `sinceSeconds`"));
        assert_eq!(
            LogOptions::from_query(&Query::parse(Some("tailLines=x")), "web")
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn stream_options_become_kubelet_params() {
        let q = Query::parse(Some(
            "command=sh&command=-c&command=echo+a%26b&container=c&stdin=true&stdout=true&stderr=true&tty=false",
        ));
        assert_eq!(
            Stream::Exec.kubelet_query(&q).unwrap(),
            "command=sh&command=-c&command=echo+a%26b&error=1&input=1&output=1"
        );
        assert_eq!(
            Stream::Attach.kubelet_query(&q).unwrap(),
            "error=1&input=1&output=1"
        );
        let pf = Query::parse(Some("ports=8080&ports=9090,53"));
        assert_eq!(
            Stream::PortForward.kubelet_query(&pf).unwrap(),
            "port=8080%2C9090%2C53"
        );
        assert_eq!(
            Stream::PortForward
                .kubelet_query(&Query::default())
                .unwrap(),
            ""
        );
        assert!(Stream::PortForward
            .kubelet_query(&Query::parse(Some("ports=http")))
            .is_err());
    }

    #[test]
    fn splits_scheme_name_port_like_upstream() {
        let cases = [
            ("web", Some(("", "web", ""))),
            ("web:80", Some(("", "web", "80"))),
            ("web:http", Some(("", "web", "http"))),
            ("https:web:443", Some(("https", "web", "443"))),
            ("ftp:web:21", None),
            (":80", None),
            ("a:b:c:d", None),
        ];
        for (id, want) in cases {
            assert_eq!(split_scheme_name_port(id), want, "{id}");
        }
    }

    #[test]
    fn preferred_address_follows_the_type_order() {
        let node = json!({"status": {"addresses": [
            {"type": "Hostname", "address": "n1"},
            {"type": "ExternalIP", "address": "203.0.113.5"},
            {"type": "InternalIP", "address": "10.0.0.5"},
        ]}});
        let types = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            preferred_address(&node, &types(DEFAULT_PREFERRED_ADDRESS_TYPES)).unwrap(),
            "10.0.0.5"
        );
        assert_eq!(
            preferred_address(&node, &types("Hostname,InternalIP")).unwrap(),
            "n1"
        );
        let e = preferred_address(&node, &types("InternalDNS")).unwrap_err();
        assert_eq!(
            (e.code, e.reason, e.message.as_str()),
            (
                500,
                None,
                "no preferred addresses found; known addresses: [{Hostname n1} {ExternalIP 203.0.113.5} {InternalIP 10.0.0.5}]"
            )
        );
    }

    #[test]
    fn global_unicast_like_go() {
        for (ip, want) in [
            ("10.1.2.3", true),
            ("192.0.2.2", true),
            ("127.0.0.1", false),
            ("0.0.0.0", false),
            ("169.254.1.1", false),
            ("224.0.0.1", false),
            ("255.255.255.255", false),
            ("fd00::2", true),
            ("::1", false),
            ("fe80::1", false),
            ("::ffff:127.0.0.1", false),
        ] {
            assert_eq!(is_global_unicast(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn backend_errors_map_like_the_generic_response_checker() {
        let bad = Failure::from_backend(
            400,
            "container \"c\" in pod \"web\" is waiting to start: ContainerCreating",
            "pods/log",
            "web",
        );
        assert_eq!(
            (bad.code, bad.reason, bad.message.as_str()),
            (
                400,
                Some(Reason::BadRequest),
                "container \"c\" in pod \"web\" is waiting to start: ContainerCreating"
            )
        );
        let nf = Failure::from_backend(404, "nope", "pods/log", "web");
        assert_eq!(
            nf.message,
            "the server could not find the requested resource ( pods/log web)"
        );
        let odd = Failure::from_backend(418, "", "pods/log", "web");
        assert_eq!(odd.reason, None);
        assert!(odd.to_status().get("reason").is_none());
        assert_eq!(
            Failure::from_backend(500, "boom", "pods/log", "web").message,
            "Internal error occurred: boom"
        );
    }

    #[test]
    fn query_escape_matches_go() {
        assert_eq!(query_escape("a b&c=d/é~"), "a+b%26c%3Dd%2F%C3%A9~");
    }
}
