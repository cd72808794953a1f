//! The HTTP front of the API server: authentication, routing of every path, content
//! negotiation, verbs → registry calls, and turning every error into a `Status` in one place.

use crate::auth::{self, Attributes};
use crate::codec;
use crate::registry::watch::{self, WatchParams};
use crate::registry::{
    Deleted, FieldValidation, ListParams, PatchType, Registry, WriteOptions, Written,
};
use crate::request::{self, Query, Route, Target};
use crate::resources;
use crate::table::{self, As, IncludeObject};
use crate::{discovery, metrics};
use apimachinery::errors::{ApiError, Reason};
use apimachinery::selectors::{FieldSelector, LabelSelector};
use axum::body::Body;
use bytes::Bytes;
use component_base::tls::UserInfo;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

pub struct State {
    pub registry: Arc<Registry>,
    /// Connections to kubelets and proxy backends (logs, exec, attach, port-forward, proxy).
    pub kubelet: crate::kubelet::KubeletClient,
    pub authn: auth::Authenticator,
    /// Issues and publishes service-account tokens (`serviceaccounts/token`, OIDC discovery).
    pub sa_tokens: Arc<crate::serviceaccount::ServiceAccountTokens>,
    pub authz: Box<dyn auth::Authorizer>,
    pub metrics: metrics::Metrics,
    /// `host:port` clients should use (legacy `/api` serverAddressByClientCIDRs).
    pub server_address: String,
    pub ready: AtomicBool,
    pub shutdown: CancellationToken,
    pub version: Value,
}

type Resp = Response<Body>;

fn json_response(code: StatusCode, body: Vec<u8>) -> Resp {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from(body))
        .expect("static response parts are valid")
}

fn value_response(code: StatusCode, v: &Value) -> Resp {
    json_response(code, serde_json::to_vec(v).unwrap_or_default())
}

pub fn error_response(e: &ApiError) -> Resp {
    let code = StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut r = value_response(code, &e.to_status());
    if let Some(s) = e
        .details
        .as_ref()
        .and_then(|d| d.get("retryAfterSeconds"))
        .and_then(Value::as_i64)
    {
        r.headers_mut().insert(header::RETRY_AFTER, s.into());
    }
    r
}

fn text(code: StatusCode, s: &str) -> Resp {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .header("X-Content-Type-Options", "nosniff")
        .body(Body::from(s.to_string()))
        .expect("static response parts are valid")
}

fn add_warnings(mut r: Resp, warnings: &[String]) -> Resp {
    for w in warnings {
        let v = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(h) = http::HeaderValue::from_str(&v) {
            r.headers_mut().append(header::WARNING, h);
        }
    }
    r
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Entry point for every request on the secure port.
pub async fn handle<B>(state: Arc<State>, req: Request<B>, peer: Option<UserInfo>) -> Resp
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let req = req.map(Body::new);
    let started = Instant::now();
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let mut labels = metrics::RequestLabels {
        verb: method.to_string(),
        group: String::new(),
        resource: String::new(),
        subresource: String::new(),
        code: String::new(),
    };
    let resp = dispatch(&state, req, peer, &path, &mut labels).await;
    labels.code = resp.status().as_u16().to_string();
    let elapsed = started.elapsed();
    // Long-running requests (watches, streams, proxied connections) are not latencies.
    if labels.verb != "WATCH" && labels.verb != "CONNECT" {
        state
            .metrics
            .latency
            .get_or_create(&metrics::LatencyLabels {
                verb: labels.verb.clone(),
                resource: labels.resource.clone(),
            })
            .observe(elapsed.as_secs_f64());
    }
    state.metrics.requests.get_or_create(&labels).inc();
    tracing::debug!(method = %method, path = %path, code = resp.status().as_u16(), micros = elapsed.as_micros() as u64, "request");
    resp
}

async fn dispatch(
    state: &Arc<State>,
    req: Request<Body>,
    peer: Option<UserInfo>,
    path: &str,
    labels: &mut metrics::RequestLabels,
) -> Resp {
    match path {
        "/healthz" | "/livez" | "/healthz/ping" | "/livez/ping" => {
            return text(StatusCode::OK, "ok")
        }
        "/readyz" => {
            return if state.ready.load(Ordering::Acquire) && !state.shutdown.is_cancelled() {
                text(StatusCode::OK, "ok")
            } else {
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "[-]bootstrap not finished\nreadyz check failed",
                )
            }
        }
        "/version" | "/version/" => return value_response(StatusCode::OK, &state.version),
        _ => {}
    }
    let user = match state
        .authn
        .authenticate(
            peer.as_ref(),
            header_str(req.headers(), header::AUTHORIZATION),
        )
        .await
    {
        Some(u) => u,
        None if auth::is_public(path) => auth::User::anonymous(),
        None => return error_response(&ApiError::unauthorized()),
    };
    let accept = header_str(req.headers(), header::ACCEPT).map(String::from);
    if path == "/metrics" {
        return Response::builder()
            .header(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .body(Body::from(state.metrics.encode()))
            .expect("valid response");
    }
    if path == crate::serviceaccount::OPENID_CONFIG_PATH || path == crate::serviceaccount::JWKS_PATH
    {
        return issuer_discovery(state, req.method(), path);
    }
    if path == "/openapi/v2" || path.starts_with("/openapi/") {
        return openapi(path, req.uri().query(), accept.as_deref());
    }
    if !(path == "/api"
        || path == "/apis"
        || path.starts_with("/api/")
        || path.starts_with("/apis/"))
    {
        return error_response(&request::not_found_path());
    }
    let route = match request::route(path) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    if req.method() != Method::GET && !matches!(route, Route::Resource(_)) {
        return error_response(&ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    match route {
        Route::CoreVersions => match discovery::aggregated_version(accept.as_deref()) {
            Some(v) => discovery_response(v, &discovery::aggregated(true, v)),
            None => value_response(
                StatusCode::OK,
                &discovery::core_versions(&state.server_address),
            ),
        },
        Route::Groups => match discovery::aggregated_version(accept.as_deref()) {
            Some(v) => discovery_response(v, &discovery::aggregated(false, v)),
            None => value_response(StatusCode::OK, &discovery::group_list()),
        },
        Route::Group(g) => match discovery::group(&g) {
            Some(v) => value_response(StatusCode::OK, &v),
            None => error_response(&request::not_found_path()),
        },
        Route::Resources { group, version } => {
            value_response(StatusCode::OK, &discovery::resource_list(&group, &version))
        }
        Route::Resource(t) => {
            labels.group = t.resource.group.to_string();
            labels.resource = t.resource.plural.to_string();
            labels.subresource = t.subresource.clone().unwrap_or_default();
            match resource(state, req, t, &user, accept.as_deref(), labels).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            }
        }
    }
}

/// Service-account issuer discovery, as upstream's `serviceaccount.OpenIDMetadataServer`.
fn issuer_discovery(state: &State, method: &Method, path: &str) -> Resp {
    if method != Method::GET {
        return error_response(&ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        ));
    }
    let (body, content_type) = if path == crate::serviceaccount::JWKS_PATH {
        (state.sa_tokens.jwks(), "application/jwk-set+json")
    } else {
        (state.sa_tokens.openid_configuration(), "application/json")
    };
    let mut r = value_response(StatusCode::OK, &body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

fn discovery_response(version: &str, v: &Value) -> Resp {
    let mut r = value_response(StatusCode::OK, v);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        discovery::aggregated_content_type(version)
            .parse()
            .expect("valid header"),
    );
    r
}

fn openapi(path: &str, query: Option<&str>, accept: Option<&str>) -> Resp {
    let oa = openapi::OpenApi::global();
    let served = resources::group_version_paths();
    let served: Vec<&str> = served.iter().map(String::as_str).collect();
    if path == "/openapi/v2" {
        // kubectl ≤1.28 asks with the deprecated `@` form but only parses the dotted one back.
        let wants_pb = accept.is_some_and(|a| a.contains("protobuf"));
        return if wants_pb {
            Response::builder()
                .header(header::CONTENT_TYPE, openapi::V2_PROTOBUF_CONTENT_TYPE)
                .header(header::ETAG, format!("\"{}\"", oa.v2_etag(Some(&served))))
                .body(Body::from(oa.v2_protobuf_served(&served)))
                .expect("valid response")
        } else {
            json_response(StatusCode::OK, oa.v2_json_served(&served))
        };
    }
    if path == "/openapi/v3" || path == "/openapi/v3/" {
        return value_response(StatusCode::OK, &oa.v3_root(&served));
    }
    if let Some(gv) = path.strip_prefix("/openapi/v3/") {
        if served.contains(&gv) {
            if let (Some(current), Some(doc)) = (oa.v3_hash(gv), oa.v3_group_version(gv)) {
                // Like kube-openapi's handler3: a stale `hash` is redirected to the current URL,
                // a matching one may be cached forever.
                let asked = request::Query::parse(query).get("hash").map(str::to_string);
                return match asked {
                    Some(h) if h != current => Response::builder()
                        .status(StatusCode::MOVED_PERMANENTLY)
                        .header(header::LOCATION, format!("/openapi/v3/{gv}?hash={current}"))
                        .body(Body::empty())
                        .expect("valid response"),
                    Some(_) => {
                        let mut r = json_response(StatusCode::OK, doc);
                        r.headers_mut().insert(
                            header::CACHE_CONTROL,
                            "public, immutable".parse().expect("valid header"),
                        );
                        r.headers_mut().insert(
                            header::ETAG,
                            format!("\"{current}\"").parse().expect("valid header"),
                        );
                        r
                    }
                    None => {
                        let mut r = json_response(StatusCode::OK, doc);
                        r.headers_mut().insert(
                            header::ETAG,
                            format!("\"{current}\"").parse().expect("valid header"),
                        );
                        r
                    }
                };
            }
        }
    }
    error_response(&request::not_found_path())
}

/// Decode a request body in the format its Content-Type names.
fn decode_request(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    codec::decode_body(
        codec::body_format(header_str(headers, header::CONTENT_TYPE))?,
        body,
    )
}

async fn read_body(req: Request<Body>) -> Result<(HeaderMap, Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > codec::MAX_BODY {
            return Err(ApiError::too_large());
        }
    }
    let limited = http_body_util::Limited::new(body, codec::MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok((parts.headers, c.to_bytes())),
        Err(e) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::too_large())
            } else {
                Err(ApiError::bad_request(format!(
                    "error reading request body: {e}"
                )))
            }
        }
    }
}

fn write_options(
    q: &Query,
    headers: &HeaderMap,
    default_validation: FieldValidation,
) -> Result<WriteOptions, ApiError> {
    let dry_run = match q.all("dryRun").as_slice() {
        [] => false,
        ["All"] => true,
        other => {
            return Err(ApiError::invalid(
                "DryRun",
                "",
                "",
                &[apimachinery::errors::FieldError::not_supported(
                    "dryRun",
                    json!(other),
                    &["All"],
                )],
            ))
        }
    };
    let field_validation = match q.get("fieldValidation") {
        None | Some("") => default_validation,
        Some("Ignore") => FieldValidation::Ignore,
        Some("Warn") => FieldValidation::Warn,
        Some("Strict") => FieldValidation::Strict,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "fieldValidation must be one of \"Ignore\", \"Warn\", or \"Strict\", got {other:?}"
            )))
        }
    };
    let field_manager = match q.get("fieldManager") {
        Some(m) if !m.is_empty() => {
            if m.len() > 128 {
                return Err(ApiError::bad_request(
                    "fieldManager: Too long: may not be longer than 128",
                ));
            }
            m.to_string()
        }
        _ => header_str(headers, header::USER_AGENT)
            .map(|ua| ua.split('/').next().unwrap_or("").to_string())
            .unwrap_or_default(),
    };
    Ok(WriteOptions {
        dry_run,
        field_manager,
        field_validation,
    })
}

fn list_params(q: &Query, t: &Target) -> Result<ListParams, ApiError> {
    let label = match q.get("labelSelector").filter(|s| !s.is_empty()) {
        Some(s) => Some(
            LabelSelector::parse(s)
                .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?,
        ),
        None => None,
    };
    let field = match q.get("fieldSelector").filter(|s| !s.is_empty()) {
        Some(s) => {
            let f = FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
            let names: Vec<&str> = f.requirements().iter().map(|r| r.field.as_str()).collect();
            crate::registry::fields::check_supported(t.resource, &names)?;
            Some(f)
        }
        None => None,
    };
    let limit = q.int("limit")?.unwrap_or(0).max(0) as usize;
    let rvm = q
        .get("resourceVersionMatch")
        .filter(|s| !s.is_empty())
        .map(String::from);
    validate_list_options(q, rvm.as_deref())?;
    Ok(ListParams {
        label,
        field,
        limit,
        continue_token: q
            .get("continue")
            .filter(|s| !s.is_empty())
            .map(String::from),
        resource_version: q
            .get("resourceVersion")
            .filter(|s| !s.is_empty())
            .map(String::from),
        resource_version_match: rvm,
    })
}

/// Upstream's `ValidateListOptions`: which `resourceVersionMatch`, `sendInitialEvents` and
/// `continue` combinations a list or a watch accepts (422 otherwise).
fn validate_list_options(q: &Query, rvm: Option<&str>) -> Result<(), ApiError> {
    use apimachinery::errors::FieldError;
    let rv = q.get("resourceVersion").filter(|s| !s.is_empty());
    let send_initial = q.get("sendInitialEvents").is_some_and(|s| !s.is_empty());
    let cont = q.get("continue").is_some_and(|s| !s.is_empty());
    let mut errs = Vec::new();
    if q.flag("watch") {
        if send_initial && rvm != Some("NotOlderThan") {
            errs.push(FieldError::forbidden(
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            ));
        }
        if let Some(m) = rvm {
            if !send_initial {
                errs.push(FieldError::forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"));
            }
            if m != "NotOlderThan" {
                errs.push(FieldError::not_supported(
                    "resourceVersionMatch",
                    json!(m),
                    &["NotOlderThan"],
                ));
            }
            if cont {
                errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
        }
    } else {
        if let Some(m) = rvm {
            if rv.is_none() {
                errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            if cont {
                errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch is forbidden when continue is provided",
                ));
            }
            if m != "Exact" && m != "NotOlderThan" {
                errs.push(FieldError::not_supported(
                    "resourceVersionMatch",
                    json!(m),
                    &["Exact", "NotOlderThan", ""],
                ));
            }
            if m == "Exact" && rv == Some("0") {
                errs.push(FieldError::forbidden(
                    "resourceVersionMatch",
                    "resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\"",
                ));
            }
        }
        if send_initial {
            errs.push(FieldError::forbidden(
                "sendInitialEvents",
                "sendInitialEvents is forbidden for list",
            ));
        }
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("ListOptions", "meta.k8s.io", "", &errs))
    }
}

/// Render a single object as the client asked.
fn render_object(t: &Target, obj: &Value, as_: As, include: IncludeObject) -> Value {
    match as_ {
        As::Object => obj.clone(),
        As::PartialObjectMetadata => table::partial_metadata(obj),
        As::Table => {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(json!(""));
            table::table(
                t.resource.group,
                t.resource.kind,
                std::slice::from_ref(obj),
                json!({"resourceVersion": rv}),
                true,
                include,
            )
        }
    }
}

fn written_response(t: &Target, w: Written, as_: As, include: IncludeObject) -> Resp {
    let code = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let resp = if as_ == As::Object {
        match w.stored {
            // The bytes just stored, with the new resourceVersion spliced in: the same object
            // without encoding it again.
            Some(stored) => json_response(code, stored.into_vec()),
            None => value_response(code, &w.object),
        }
    } else {
        value_response(code, &render_object(t, &w.object, as_, include))
    };
    add_warnings(resp, &w.warnings)
}

async fn resource(
    state: &Arc<State>,
    req: Request<Body>,
    t: Target,
    user: &auth::User,
    accept: Option<&str>,
    labels: &mut metrics::RequestLabels,
) -> Result<Resp, ApiError> {
    let q = Query::parse(req.uri().query());
    let method = req.method().clone();
    let reg = &state.registry;
    let as_ = table::negotiate(accept);
    let include = IncludeObject::parse(q.get("includeObject"));
    let r = t.resource;
    let name = t.name.clone();
    // Subresources served by a kubelet or another backend (upstream's `Connecter`s); their
    // query belongs to them (a proxied `?watch=true` is not a watch).
    let connect = name.is_some()
        && matches!(
            t.subresource.as_deref(),
            Some("log" | "exec" | "attach" | "portforward" | "proxy")
        );
    let watching = q.flag("watch") && !connect;
    let verb = match (&method, name.is_some(), watching) {
        (&Method::HEAD | &Method::OPTIONS, _, _) if connect => "get",
        (&Method::GET, _, true) => "watch",
        (&Method::GET, false, _) => "list",
        (&Method::GET, true, _) => "get",
        (&Method::POST, _, _) => "create",
        (&Method::PUT, _, _) => "update",
        (&Method::PATCH, _, _) => "patch",
        (&Method::DELETE, false, _) => "deletecollection",
        (&Method::DELETE, true, _) => "delete",
        _ => {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ))
        }
    };
    labels.verb = if connect {
        "CONNECT".to_string()
    } else {
        verb.to_uppercase()
    };
    state
        .authz
        .authorize(&Attributes {
            user: &user.info,
            verb,
            namespace: t.namespace.as_deref(),
            group: r.group,
            resource: r.plural,
            subresource: t.subresource.as_deref(),
            name: name.as_deref(),
        })
        .map_err(|why| {
            ApiError::forbidden(
                r.group_resource(),
                name.as_deref().unwrap_or(""),
                &format!(
                    "User \"{}\" cannot {verb} resource \"{}\" in API group \"{}\": {why}",
                    user.info.name, r.plural, r.group
                ),
            )
        })?;
    // Virtual resources: reviews answered on the spot.
    if r.storage == resources::Storage::Virtual {
        if method != Method::POST {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
        let (headers, body) = read_body(req).await?;
        let obj = decode_request(&headers, &body)?;
        return Ok(value_response(
            StatusCode::CREATED,
            &crate::review::answer(r, &t, obj, user, &state.authn, state.authz.as_ref()).await,
        ));
    }
    if r.namespaced && t.namespace.is_none() && !matches!(verb, "list" | "watch") {
        return Err(ApiError::not_found(
            r.group_resource(),
            name.as_deref().unwrap_or(""),
        ));
    }
    match t.subresource.as_deref() {
        None | Some("status") => {}
        Some("scale") => return scale(state, req, &t, &q, accept).await,
        Some("binding") if method == Method::POST => return pod_binding(state, req, &t, &q).await,
        Some("eviction") if method == Method::POST => {
            return pod_eviction(state, req, &t, &q).await
        }
        Some("token") if r.kind == "ServiceAccount" && method == Method::POST => {
            return service_account_token(state, req, &t).await
        }
        Some("finalize") if method == Method::PUT => {}
        Some("approval") if method != Method::DELETE => {}
        Some("log") if connect => return Ok(crate::proxy::pod_log(state, req, &t).await),
        Some("proxy") if connect => return Ok(crate::proxy::resource_proxy(state, req, &t).await),
        Some(sub) if connect && crate::kubelet::Stream::parse(sub).is_some() => {
            let stream = crate::kubelet::Stream::parse(sub).expect("checked");
            return Ok(crate::proxy::pod_stream(state, req, &t, stream).await);
        }
        // A subresource the resource has but not with this verb: 405, as upstream; one it does
        // not have: 404. (Never 503: clients retry those with back-off.)
        Some(sub) if r.has_subresource(sub) => {
            return Err(ApiError::new(
                Reason::MethodNotAllowed,
                format!(
                    "the server does not allow this method on the requested resource ({}/{sub})",
                    r.plural
                ),
            ))
        }
        Some(_) => return Err(request::not_found_path()),
    }
    if t.subresource.is_some() && name.is_none() {
        return Err(request::not_found_path());
    }
    match verb {
        "get" => {
            let name = name.expect("get has a name");
            let kv = reg.get_kv(&t, &name).await?;
            if as_ == As::Object {
                return Ok(json_response(StatusCode::OK, reg.encode_kv(&t, &kv)?));
            }
            let obj: Value = serde_json::from_slice(&reg.encode_kv(&t, &kv)?).unwrap_or_default();
            Ok(value_response(
                StatusCode::OK,
                &render_object(&t, &obj, as_, include),
            ))
        }
        "list" => {
            let p = list_params(&q, &t)?;
            let out = reg.list(&t, &p).await?;
            let api_version = t.api_version();
            match as_ {
                As::Object => Ok(Response::builder()
                    .status(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/json")
                    .header(header::CACHE_CONTROL, "no-cache, private")
                    .body(Body::new(codec::ListBody::new(
                        &api_version,
                        &r.list_kind(),
                        out.revision,
                        out.continue_token.as_deref(),
                        out.remaining,
                        out.items,
                    )))
                    .expect("static response parts are valid")),
                _ => {
                    let objs: Vec<Value> = out
                        .items
                        .iter()
                        .map(|i| serde_json::from_slice(&i.to_vec()).unwrap_or_default())
                        .collect();
                    let mut meta = json!({"resourceVersion": out.revision.to_string()});
                    if let Some(c) = &out.continue_token {
                        meta["continue"] = json!(c);
                    }
                    let body = if as_ == As::Table {
                        table::table(r.group, r.kind, &objs, meta, true, include)
                    } else {
                        table::partial_metadata_list(&objs, meta)
                    };
                    Ok(value_response(StatusCode::OK, &body))
                }
            }
        }
        "watch" => {
            let list = list_params(&q, &t)?;
            let mut list = list;
            if let Some(n) = &name {
                // A watch on a named object is a watch with metadata.name selected.
                let f = FieldSelector::parse(&format!("metadata.name={n}"))
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                list.field = Some(f);
            }
            let timeout = q
                .int("timeoutSeconds")?
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(s as u64))
                .unwrap_or(Duration::from_secs(1800 + rand::random::<u64>() % 1800));
            let p = WatchParams {
                resource_version: list.resource_version.clone(),
                list,
                allow_bookmarks: q.flag("allowWatchBookmarks"),
                send_initial_events: q.flag("sendInitialEvents"),
                timeout,
                render: as_,
                include,
                bookmark_interval: Duration::from_secs(30),
            };
            let rx =
                watch::start(state.registry.clone(), t.clone(), p, state.shutdown.clone()).await?;
            let gauge = state.metrics.watchers.clone();
            gauge.inc();
            let guard = WatchGuard(gauge);
            let stream = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<Bytes, std::convert::Infallible>(b), (rx, guard)))
            });
            Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::CACHE_CONTROL, "no-cache, private")
                .body(Body::from_stream(stream))
                .expect("valid response"))
        }
        "create" => {
            let (headers, body) = read_body(req).await?;
            let o = write_options(&q, &headers, FieldValidation::Warn)?;
            let obj = decode_request(&headers, &body)?;
            if name.is_some() {
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ));
            }
            let w = reg.create(&t, obj, &o).await?;
            Ok(written_response(&t, w, as_, include))
        }
        "update" => {
            let name = name.expect("update has a name");
            let (headers, body) = read_body(req).await?;
            let o = write_options(&q, &headers, FieldValidation::Warn)?;
            let obj = decode_request(&headers, &body)?;
            let w = if t.subresource.as_deref() == Some("finalize") {
                let main = Target {
                    subresource: None,
                    ..t.clone()
                };
                finalize_namespace(reg, &main, &name, obj, &o).await?
            } else if t.subresource.as_deref() == Some("approval") {
                let status = Target {
                    subresource: Some("status".into()),
                    ..t.clone()
                };
                reg.update(&status, &name, obj, &o).await?
            } else {
                reg.update(&t, &name, obj, &o).await?
            };
            Ok(written_response(&t, w, as_, include))
        }
        "patch" => {
            let name = name.expect("patch has a name");
            let (headers, body) = read_body(req).await?;
            let pt = PatchType::from_content_type(header_str(&headers, header::CONTENT_TYPE))?;
            let o = write_options(&q, &headers, FieldValidation::Warn)?;
            let force = q.flag("force");
            if force && pt != PatchType::Apply {
                return Err(ApiError::bad_request(
                    "force is only allowed for apply patches",
                ));
            }
            let w = reg.patch(&t, &name, pt, &body, force, &o).await?;
            Ok(written_response(&t, w, as_, include))
        }
        "delete" => {
            let name = name.expect("delete has a name");
            let (headers, body) = read_body(req).await?;
            let opts = delete_options(&q, &headers, &body)?;
            let dry_run = write_options(&q, &headers, FieldValidation::Ignore)?.dry_run
                || opts
                    .get("dryRun")
                    .and_then(Value::as_array)
                    .is_some_and(|a| a.iter().any(|v| v == "All"));
            match reg.delete(&t, &name, &opts, dry_run).await? {
                Deleted::Pending(obj) => Ok(value_response(
                    StatusCode::OK,
                    &render_object(&t, &obj, as_, include),
                )),
                Deleted::Gone(obj) => {
                    if matches!(
                        (r.group, r.kind),
                        ("", "Pod") | ("", "Service") | ("", "Namespace")
                    ) {
                        Ok(value_response(
                            StatusCode::OK,
                            &render_object(&t, &obj, as_, include),
                        ))
                    } else {
                        let mut details = json!({"name": name, "kind": r.plural, "uid": obj.pointer("/metadata/uid").cloned().unwrap_or(json!(""))});
                        if !r.group.is_empty() {
                            details["group"] = json!(r.group);
                        }
                        Ok(value_response(
                            StatusCode::OK,
                            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
                        ))
                    }
                }
            }
        }
        "deletecollection" => {
            let p = list_params(&q, &t)?;
            let (headers, body) = read_body(req).await?;
            let opts = delete_options(&q, &headers, &body)?;
            let dry_run = write_options(&q, &headers, FieldValidation::Ignore)?.dry_run;
            let items = reg.delete_collection(&t, &p, &opts, dry_run).await?;
            Ok(value_response(
                StatusCode::OK,
                &json!({"kind": r.list_kind(), "apiVersion": t.api_version(), "metadata": {}, "items": items}),
            ))
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

struct WatchGuard(prometheus_client::metrics::gauge::Gauge<i64, std::sync::atomic::AtomicI64>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// DeleteOptions from the body (JSON) and the query string (`gracePeriodSeconds`,
/// `propagationPolicy`, `orphanDependents`).
fn delete_options(q: &Query, headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let mut opts = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        decode_request(headers, body)?
    };
    if let Some(g) = q.int("gracePeriodSeconds")? {
        opts["gracePeriodSeconds"] = json!(g);
    }
    if let Some(p) = q.get("propagationPolicy") {
        opts["propagationPolicy"] = json!(p);
    }
    if let Some(o) = q.get("orphanDependents") {
        opts["orphanDependents"] = json!(o == "true");
    }
    if let Some(g) = opts.get("gracePeriodSeconds").and_then(Value::as_i64) {
        if g < 0 {
            opts["gracePeriodSeconds"] = json!(0);
        }
    }
    Ok(opts)
}

async fn finalize_namespace(
    reg: &Registry,
    t: &Target,
    name: &str,
    obj: Value,
    o: &WriteOptions,
) -> Result<Written, ApiError> {
    let finalizers = obj
        .pointer("/spec/finalizers")
        .cloned()
        .unwrap_or(json!([]));
    reg.finalize_namespace(t, name, finalizers, o).await
}

async fn scale(
    state: &Arc<State>,
    req: Request<Body>,
    t: &Target,
    q: &Query,
    accept: Option<&str>,
) -> Result<Resp, ApiError> {
    let _ = accept;
    let name = t.name.clone().ok_or_else(request::not_found_path)?;
    let reg = &state.registry;
    let main = Target {
        subresource: None,
        ..t.clone()
    };
    match *req.method() {
        Method::GET => Ok(value_response(
            StatusCode::OK,
            &reg.get_scale(&main, &name).await?,
        )),
        Method::PUT | Method::PATCH => {
            let method = req.method().clone();
            let (headers, body) = read_body(req).await?;
            let o = write_options(q, &headers, FieldValidation::Warn)?;
            let scale = if method == Method::PUT {
                let new = decode_request(&headers, &body)?;
                reg.update_scale(&main, &name, &o, |_| Ok(new.clone()))
                    .await?
            } else {
                let pt = PatchType::from_content_type(header_str(&headers, header::CONTENT_TYPE))?;
                let patch: Value = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                reg.update_scale(&main, &name, &o, |cur| {
                    let scale_schema = apimachinery::patch::NoSchema;
                    let mut cur = cur.clone();
                    if let Some(m) = cur.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                    match pt {
                        PatchType::Json => apimachinery::patch::json_patch(&cur, &patch)
                            .map_err(|e| e.to_api_error()),
                        PatchType::Merge => apimachinery::patch::merge_patch(&cur, &patch)
                            .map_err(|e| e.to_api_error()),
                        PatchType::Strategic => {
                            apimachinery::patch::strategic_merge_patch(&cur, &patch, &scale_schema)
                                .map_err(|e| e.to_api_error())
                        }
                        PatchType::Apply => Err(ApiError::new(
                            Reason::UnsupportedMediaType,
                            "apply patches are not supported on the scale subresource",
                        )),
                    }
                })
                .await?
            };
            Ok(value_response(StatusCode::OK, &scale))
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// `POST .../serviceaccounts/{name}/token`: a TokenRequest answered with a fresh token.
async fn service_account_token(
    state: &Arc<State>,
    req: Request<Body>,
    t: &Target,
) -> Result<Resp, ApiError> {
    let name = t.name.clone().ok_or_else(request::not_found_path)?;
    let namespace = t.namespace.clone().ok_or_else(request::not_found_path)?;
    let (headers, body) = read_body(req).await?;
    let token_request = decode_request(&headers, &body)?;
    let answered = state
        .sa_tokens
        .create_token(
            state.registry.as_ref(),
            &namespace,
            &name,
            token_request,
            crate::serviceaccount::unix_now(),
        )
        .await?;
    Ok(value_response(StatusCode::CREATED, &answered))
}

async fn pod_binding(
    state: &Arc<State>,
    req: Request<Body>,
    t: &Target,
    q: &Query,
) -> Result<Resp, ApiError> {
    let name = t.name.clone().ok_or_else(request::not_found_path)?;
    let (headers, body) = read_body(req).await?;
    let o = write_options(q, &headers, FieldValidation::Ignore)?;
    let binding = decode_request(&headers, &body)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "Binding",
            "",
            &name,
            &[apimachinery::errors::FieldError::required(
                "target.name",
                "",
            )],
        ));
    }
    state
        .registry
        .bind_pod(t, &name, &node, &binding, &o)
        .await?;
    Ok(value_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

async fn pod_eviction(
    state: &Arc<State>,
    req: Request<Body>,
    t: &Target,
    q: &Query,
) -> Result<Resp, ApiError> {
    let name = t.name.clone().ok_or_else(request::not_found_path)?;
    let (headers, body) = read_body(req).await?;
    let o = write_options(q, &headers, FieldValidation::Ignore)?;
    let eviction = decode_request(&headers, &body)?;
    let main = Target {
        subresource: None,
        ..t.clone()
    };
    let opts = eviction.get("deleteOptions").cloned().unwrap_or(json!({}));
    state
        .registry
        .evict_pod(&main, &name, &opts, o.dry_run)
        .await?;
    Ok(value_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}
