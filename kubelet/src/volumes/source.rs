//! Where volume contents come from: the [`ObjectSource`] trait (the API reads volumes need),
//! [`ApiSource`], its implementation over the API server with a shared short-lived cache, and
//! [`MemorySource`], an in-memory one for tests.
//!
//! The cache keeps API load flat however often pods sync: each object is read at most once per
//! TTL (1 s) across all pods of the node, and concurrent readers of the same object share one
//! request.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Secret, ServiceAccount,
};
use kube::api::{ListParams, PostParams};
use kube::Api;
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// A failed read.
#[derive(Clone, Debug, thiserror::Error)]
pub enum SourceError {
    /// The API server does not serve this call (e.g. `serviceaccounts/token`).
    #[error("{0}")]
    NotServed(String),
    #[error("{0}")]
    Api(String),
}

pub type SourceResult<T> = Result<T, SourceError>;

/// The API reads volume set-up needs. `Ok(None)`: the object does not exist.
pub trait ObjectSource: Send + Sync + 'static {
    fn config_map<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Arc<ConfigMap>>>>;
    fn secret<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Arc<Secret>>>>;
    fn persistent_volume_claim<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Arc<PersistentVolumeClaim>>>>;
    fn persistent_volume<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Arc<PersistentVolume>>>>;
    fn service_account<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Arc<ServiceAccount>>>>;
    /// Secrets of type `kubernetes.io/service-account-token` in `ns` (legacy tokens).
    fn service_account_token_secrets<'a>(
        &'a self,
        ns: &'a str,
    ) -> BoxFuture<'a, SourceResult<Arc<Vec<Secret>>>>;
    /// `POST /api/v1/namespaces/{ns}/serviceaccounts/{sa}/token`.
    fn request_token<'a>(
        &'a self,
        ns: &'a str,
        service_account: &'a str,
        req: TokenRequest,
    ) -> BoxFuture<'a, SourceResult<TokenRequest>>;
}

/// A map of keys to values read at most once per TTL; concurrent readers share one read.
struct TtlCache<T> {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry<T>>>,
}

type Entry<T> = (Instant, Arc<OnceCell<T>>);

impl<T: Clone> TtlCache<T> {
    fn new(ttl: Duration) -> Self {
        TtlCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    async fn get<F, Fut>(&self, key: String, fetch: F) -> SourceResult<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = SourceResult<T>>,
    {
        let cell = {
            let mut m = self.entries.lock().unwrap();
            let now = Instant::now();
            match m.get(&key) {
                Some((at, cell)) if now.duration_since(*at) < self.ttl => cell.clone(),
                _ => {
                    if m.len() >= 256 {
                        let ttl = self.ttl;
                        m.retain(|_, (at, _)| now.duration_since(*at) < ttl);
                    }
                    let cell = Arc::new(OnceCell::new());
                    m.insert(key, (now, cell.clone()));
                    cell
                }
            }
        };
        // A failed read leaves the cell empty, so the next caller tries again.
        cell.get_or_try_init(fetch).await.cloned()
    }
}

/// [`ObjectSource`] over the API server.
pub struct ApiSource {
    client: kube::Client,
    config_maps: TtlCache<Option<Arc<ConfigMap>>>,
    secrets: TtlCache<Option<Arc<Secret>>>,
    claims: TtlCache<Option<Arc<PersistentVolumeClaim>>>,
    volumes: TtlCache<Option<Arc<PersistentVolume>>>,
    accounts: TtlCache<Option<Arc<ServiceAccount>>>,
    token_secrets: TtlCache<Arc<Vec<Secret>>>,
}

impl ApiSource {
    pub fn new(client: kube::Client) -> Self {
        Self::with_ttl(client, Duration::from_secs(1))
    }

    pub fn with_ttl(client: kube::Client, ttl: Duration) -> Self {
        ApiSource {
            client,
            config_maps: TtlCache::new(ttl),
            secrets: TtlCache::new(ttl),
            claims: TtlCache::new(ttl),
            volumes: TtlCache::new(ttl),
            accounts: TtlCache::new(ttl),
            token_secrets: TtlCache::new(ttl),
        }
    }
}

fn api_error(e: kube::Error) -> SourceError {
    match e {
        kube::Error::Api(s) => SourceError::Api(s.message),
        e => SourceError::Api(e.to_string()),
    }
}

async fn get_opt<K>(api: Api<K>, name: &str) -> SourceResult<Option<Arc<K>>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map(|o| o.map(Arc::new))
        .map_err(api_error)
}

impl ObjectSource for ApiSource {
    fn config_map<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Arc<ConfigMap>>>> {
        let api = Api::namespaced(self.client.clone(), ns);
        self.config_maps
            .get(format!("{ns}/{name}"), move || get_opt(api, name))
            .boxed()
    }

    fn secret<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Arc<Secret>>>> {
        let api = Api::namespaced(self.client.clone(), ns);
        self.secrets
            .get(format!("{ns}/{name}"), move || get_opt(api, name))
            .boxed()
    }

    fn persistent_volume_claim<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Arc<PersistentVolumeClaim>>>> {
        let api = Api::namespaced(self.client.clone(), ns);
        self.claims
            .get(format!("{ns}/{name}"), move || get_opt(api, name))
            .boxed()
    }

    fn persistent_volume<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Arc<PersistentVolume>>>> {
        let api = Api::all(self.client.clone());
        self.volumes
            .get(name.to_string(), move || get_opt(api, name))
            .boxed()
    }

    fn service_account<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Arc<ServiceAccount>>>> {
        let api = Api::namespaced(self.client.clone(), ns);
        self.accounts
            .get(format!("{ns}/{name}"), move || get_opt(api, name))
            .boxed()
    }

    fn service_account_token_secrets<'a>(
        &'a self,
        ns: &'a str,
    ) -> BoxFuture<'a, SourceResult<Arc<Vec<Secret>>>> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        self.token_secrets
            .get(ns.to_string(), move || async move {
                let lp = ListParams::default().fields("type=kubernetes.io/service-account-token");
                api.list(&lp)
                    .await
                    .map(|l| Arc::new(l.items))
                    .map_err(api_error)
            })
            .boxed()
    }

    fn request_token<'a>(
        &'a self,
        ns: &'a str,
        service_account: &'a str,
        req: TokenRequest,
    ) -> BoxFuture<'a, SourceResult<TokenRequest>> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), ns);
        async move {
            api.create_token_request(service_account, &PostParams::default(), &req)
                .await
                .map_err(|e| match e {
                    // Our API server answers 503 for subresources it does not serve yet; others
                    // 404/405 without naming the service account.
                    kube::Error::Api(s)
                        if s.code == 503
                            || s.code == 405
                            || (s.code == 404 && !s.message.contains("serviceaccount")) =>
                    {
                        SourceError::NotServed(s.message)
                    }
                    e => api_error(e),
                })
        }
        .boxed()
    }
}

/// An in-memory [`ObjectSource`] for tests: objects put in by name, tokens minted locally
/// (`token-<sa>-<n>`) unless the TokenRequest API is switched off.
#[derive(Default)]
pub struct MemorySource {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    config_maps: HashMap<String, Arc<ConfigMap>>,
    secrets: HashMap<String, Arc<Secret>>,
    claims: HashMap<String, Arc<PersistentVolumeClaim>>,
    volumes: HashMap<String, Arc<PersistentVolume>>,
    accounts: HashMap<String, Arc<ServiceAccount>>,
    no_token_api: bool,
    tokens_issued: usize,
    reads: usize,
}

fn key_of(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        m.namespace.as_deref().unwrap_or_default(),
        m.name.as_deref().unwrap_or_default()
    )
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn put_config_map(&self, cm: ConfigMap) {
        let k = key_of(&cm.metadata);
        self.state
            .lock()
            .unwrap()
            .config_maps
            .insert(k, Arc::new(cm));
    }
    pub fn put_secret(&self, s: Secret) {
        let k = key_of(&s.metadata);
        self.state.lock().unwrap().secrets.insert(k, Arc::new(s));
    }
    pub fn put_claim(&self, c: PersistentVolumeClaim) {
        let k = key_of(&c.metadata);
        self.state.lock().unwrap().claims.insert(k, Arc::new(c));
    }
    pub fn put_volume(&self, v: PersistentVolume) {
        let k = v.metadata.name.clone().unwrap_or_default();
        self.state.lock().unwrap().volumes.insert(k, Arc::new(v));
    }
    pub fn put_service_account(&self, sa: ServiceAccount) {
        let k = key_of(&sa.metadata);
        self.state.lock().unwrap().accounts.insert(k, Arc::new(sa));
    }
    pub fn delete_config_map(&self, ns: &str, name: &str) {
        self.state
            .lock()
            .unwrap()
            .config_maps
            .remove(&format!("{ns}/{name}"));
    }
    /// Answer TokenRequests as an API server without the subresource does.
    pub fn disable_token_api(&self) {
        self.state.lock().unwrap().no_token_api = true;
    }
    pub fn tokens_issued(&self) -> usize {
        self.state.lock().unwrap().tokens_issued
    }
    /// Object reads served so far.
    pub fn reads(&self) -> usize {
        self.state.lock().unwrap().reads
    }

    fn get<T: Clone + Send + 'static>(
        &self,
        pick: impl FnOnce(&MemoryState) -> Option<T>,
    ) -> BoxFuture<'static, SourceResult<Option<T>>> {
        let mut s = self.state.lock().unwrap();
        s.reads += 1;
        let v = pick(&s);
        futures::future::ready(Ok(v)).boxed()
    }
}

impl ObjectSource for MemorySource {
    fn config_map<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Arc<ConfigMap>>>> {
        self.get(|s| s.config_maps.get(&format!("{ns}/{name}")).cloned())
    }
    fn secret<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Arc<Secret>>>> {
        self.get(|s| s.secrets.get(&format!("{ns}/{name}")).cloned())
    }
    fn persistent_volume_claim<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Arc<PersistentVolumeClaim>>>> {
        self.get(|s| s.claims.get(&format!("{ns}/{name}")).cloned())
    }
    fn persistent_volume<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Arc<PersistentVolume>>>> {
        self.get(|s| s.volumes.get(name).cloned())
    }
    fn service_account<'a>(
        &'a self,
        ns: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, SourceResult<Option<Arc<ServiceAccount>>>> {
        self.get(|s| s.accounts.get(&format!("{ns}/{name}")).cloned())
    }
    fn service_account_token_secrets<'a>(
        &'a self,
        ns: &'a str,
    ) -> BoxFuture<'a, SourceResult<Arc<Vec<Secret>>>> {
        let s = self.state.lock().unwrap();
        let v: Vec<Secret> = s
            .secrets
            .values()
            .filter(|x| {
                x.metadata.namespace.as_deref() == Some(ns)
                    && x.type_.as_deref() == Some("kubernetes.io/service-account-token")
            })
            .map(|x| (**x).clone())
            .collect();
        futures::future::ready(Ok(Arc::new(v))).boxed()
    }
    fn request_token<'a>(
        &'a self,
        ns: &'a str,
        service_account: &'a str,
        mut req: TokenRequest,
    ) -> BoxFuture<'a, SourceResult<TokenRequest>> {
        let mut s = self.state.lock().unwrap();
        let r = if s.no_token_api {
            Err(SourceError::NotServed(
                "serviceaccounts/token is not served by this API server yet".into(),
            ))
        } else if !s.accounts.contains_key(&format!("{ns}/{service_account}")) {
            Err(SourceError::Api(format!(
                "serviceaccounts \"{service_account}\" not found"
            )))
        } else {
            s.tokens_issued += 1;
            let secs = req
                .spec
                .as_ref()
                .and_then(|s| s.expiration_seconds)
                .unwrap_or(3600);
            req.status = Some(k8s_openapi::api::authentication::v1::TokenRequestStatus {
                token: Some(format!("token-{service_account}-{}", s.tokens_issued)),
                expiration_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::now()
                        + k8s_openapi::jiff::SignedDuration::from_secs(secs),
                )),
            });
            Ok(req)
        };
        futures::future::ready(r).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A client whose API server answers like ours does today: the TokenRequest subresource is
    /// not served (503), configMaps exist only as `default/present`.
    fn fake_api(requests: Arc<AtomicUsize>) -> kube::Client {
        let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
            let requests = requests.clone();
            async move {
                requests.fetch_add(1, Ordering::SeqCst);
                let path = req.uri().path().to_string();
                let _ = req.into_body().collect().await?;
                let (code, body) = if path.ends_with("/serviceaccounts/default/token") {
                    (
                        503,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 503, "reason": "ServiceUnavailable", "message": "serviceaccounts/token is not served by this API server yet"}),
                    )
                } else if path == "/api/v1/namespaces/default/configmaps/present" {
                    (
                        200,
                        serde_json::json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "present", "namespace": "default"}, "data": {"k": "v"}}),
                    )
                } else {
                    (
                        404,
                        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound", "message": "not found"}),
                    )
                };
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    http::Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(Full::new(bytes::Bytes::from(body.to_string())))
                        .unwrap(),
                )
            }
        });
        kube::Client::new(svc, "default")
    }

    #[tokio::test]
    async fn api_source_maps_missing_objects_and_unserved_token_requests() {
        let requests = Arc::new(AtomicUsize::new(0));
        let src = ApiSource::new(fake_api(requests.clone()));
        let cm = src.config_map("default", "present").await.unwrap().unwrap();
        assert_eq!(cm.data.as_ref().unwrap()["k"], "v");
        assert!(src.config_map("default", "absent").await.unwrap().is_none());
        // Cached: a second read within the TTL makes no request.
        let before = requests.load(Ordering::SeqCst);
        src.config_map("default", "present").await.unwrap();
        assert_eq!(requests.load(Ordering::SeqCst), before);
        let err = src
            .request_token("default", "default", TokenRequest::default())
            .await
            .unwrap_err();
        assert!(matches!(err, SourceError::NotServed(_)), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_cache_reads_once_per_ttl_and_retries_failures() {
        let cache: TtlCache<u32> = TtlCache::new(Duration::from_secs(1));
        let reads = AtomicUsize::new(0);
        let fetch = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            Ok(7)
        };
        assert_eq!(cache.get("k".into(), fetch).await.unwrap(), 7);
        assert_eq!(cache.get("k".into(), fetch).await.unwrap(), 7);
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        tokio::time::advance(Duration::from_millis(1001)).await;
        cache.get("k".into(), fetch).await.unwrap();
        assert_eq!(reads.load(Ordering::SeqCst), 2);

        let failing = || async { Err::<u32, _>(SourceError::Api("boom".into())) };
        assert!(cache.get("f".into(), failing).await.is_err());
        assert_eq!(cache.get("f".into(), fetch).await.unwrap(), 7, "retried");
    }
}
