//! Service-account tokens as upstream issues and checks them (`pkg/serviceaccount`,
//! `pkg/registry/core/serviceaccount/storage/token.go`): ES256 JWTs signed with the cluster's
//! service-account key, the `serviceaccounts/token` subresource (TokenRequest) that mints them,
//! their verification for the authenticator, and the OIDC discovery documents
//! (`/.well-known/openid-configuration`, `/openid/v1/jwks`) relying parties verify them with.
//!
//! Guarantees: a token verifies only with this key, for one of the configured issuers, for an
//! audience the caller accepts and within its validity window (upstream's 60 s leeway); a token
//! bound to a pod, secret or node stops verifying once that object is gone or replaced (another
//! uid), and every token stops verifying when its service account is deleted or recreated.

use crate::auth::User;
use crate::request::Target;
use crate::resources;
use apimachinery::errors::{ApiError, FieldError, GroupResource, Reason};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The issuer (`iss`) when `--service-account-issuer` is not given.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// The OIDC discovery document (upstream's `serviceaccount.OpenIDConfigPath`).
pub const OPENID_CONFIG_PATH: &str = "/.well-known/openid-configuration";
/// The key set the discovery document points to (upstream's `serviceaccount.JWKSPath`).
pub const JWKS_PATH: &str = "/openid/v1/jwks";

/// Clock skew tolerated on `exp`, `nbf` and `iat`, and on deletion timestamps of bound objects
/// (go-jose's `DefaultLeeway`, which upstream uses for both).
const LEEWAY: i64 = 60;
/// `spec.expirationSeconds` when a TokenRequest leaves it unset.
const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
const MIN_EXPIRATION_SECONDS: i64 = 600;
const MAX_EXPIRATION_SECONDS: i64 = 1 << 32;
/// What the kubelet asks for in the default `kube-api-access-*` volume; such pod-bound tokens
/// are extended to [`EXTENDED_EXPIRATION_SECONDS`] (upstream's safe transition for clients that
/// never reload tokens) when `--service-account-extend-token-expiration` is on.
const WARN_ONLY_EXPIRATION_SECONDS: i64 = 3607;
const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 60 * 60;

/// `authentication.kubernetes.io/*` user extra keys (upstream's `serviceaccount` package).
pub const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
pub const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
pub const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
pub const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
pub const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// The key material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("service-account key: {0}")]
    Invalid(String),
}

/// Why a bearer token was not accepted as a service-account token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a JWT, or one from another issuer: another authenticator may know it.
    #[error("not a service account token")]
    NotOurs,
    /// One of ours, but rejected (upstream's error text).
    #[error("{0}")]
    Rejected(String),
}

fn rejected(msg: impl Into<String>) -> TokenError {
    TokenError::Rejected(msg.into())
}

/// A reference to an object in the private claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ObjectRef {
    pub name: String,
    pub uid: String,
}

/// The `kubernetes.io` private claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct KubernetesClaims {
    pub namespace: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<ObjectRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<ObjectRef>,
    pub serviceaccount: ObjectRef,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnafter: Option<i64>,
}

/// A token's claims. Fields are in alphabetical order, which is how upstream (go-jose merging
/// public and private claims into one map) serializes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(deserialize_with = "one_or_many")]
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub jti: String,
    #[serde(rename = "kubernetes.io")]
    pub kubernetes: KubernetesClaims,
    pub nbf: i64,
    pub sub: String,
}

/// RFC 7519 allows `aud` as one string or an array.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// What a verified token says about its bearer (upstream's `ServiceAccountInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceAccountInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub node_name: String,
    pub node_uid: String,
    pub credential_id: String,
}

impl ServiceAccountInfo {
    /// The user: `system:serviceaccount:<ns>:<name>` in `system:serviceaccounts` and
    /// `system:serviceaccounts:<ns>`, with the pod, node and credential id as extra.
    pub fn user(&self) -> User {
        let mut extra = BTreeMap::new();
        if !self.pod_name.is_empty() && !self.pod_uid.is_empty() {
            extra.insert(EXTRA_POD_NAME.to_string(), vec![self.pod_name.clone()]);
            extra.insert(EXTRA_POD_UID.to_string(), vec![self.pod_uid.clone()]);
        }
        if !self.credential_id.is_empty() {
            extra.insert(
                EXTRA_CREDENTIAL_ID.to_string(),
                vec![self.credential_id.clone()],
            );
        }
        if !self.node_name.is_empty() {
            extra.insert(EXTRA_NODE_NAME.to_string(), vec![self.node_name.clone()]);
            if !self.node_uid.is_empty() {
                extra.insert(EXTRA_NODE_UID.to_string(), vec![self.node_uid.clone()]);
            }
        }
        User {
            info: component_base::UserInfo {
                name: username(&self.namespace, &self.name),
                uid: self.uid.clone(),
                groups: vec![
                    "system:serviceaccounts".to_string(),
                    format!("system:serviceaccounts:{}", self.namespace),
                ],
            },
            extra,
        }
    }
}

/// `system:serviceaccount:<ns>:<name>`.
pub fn username(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Reads the objects tokens are bound to. `Ok(None)` means the object does not exist.
#[async_trait::async_trait]
pub trait ObjectGetter: Send + Sync {
    /// A core/v1 object of `kind` (`ServiceAccount`, `Pod`, `Secret`, `Node`).
    async fn get_object(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError>;
}

#[async_trait::async_trait]
impl ObjectGetter for crate::registry::Registry {
    async fn get_object(
        &self,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let resource = resources::by_kind("", kind)
            .ok_or_else(|| ApiError::internal(format!("{kind} is not a served core kind")))?;
        let t = Target {
            resource,
            version: "v1".into(),
            namespace: namespace.map(String::from),
            name: Some(name.to_string()),
            subresource: None,
            subpath: None,
        };
        match self.get(&t, name).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.reason == Reason::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// How tokens are issued and accepted (the `--service-account-*` and `--api-audiences` flags).
#[derive(Debug, Clone)]
pub struct TokenSettings {
    /// The first issues tokens; tokens of any are accepted.
    pub issuers: Vec<String>,
    /// Audiences the API server itself accepts; the default audience of new tokens.
    pub api_audiences: Vec<String>,
    /// `jwks_uri` in the discovery document.
    pub jwks_uri: String,
    /// Extend the kubelet's 3607-second pod-bound tokens to a year.
    pub extend_expiration: bool,
}

/// The signing key, its verification key and key id.
struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    /// The uncompressed public point (`04 || x || y`).
    point: Vec<u8>,
    kid: String,
}

/// Issues, verifies and publishes service-account tokens.
pub struct ServiceAccountTokens {
    key: SigningKey,
    settings: TokenSettings,
}

impl std::fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccountTokens")
            .field("kid", &self.key.kid)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The DER inside a PEM block with `label`.
fn pem_der(pem: &str, label: &str) -> Result<Vec<u8>, KeyError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let body = pem
        .split_once(&begin)
        .and_then(|(_, rest)| rest.split_once(&end))
        .map(|(b, _)| b)
        .ok_or_else(|| KeyError::Invalid(format!("no {label} PEM block")))?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD
        .decode(b64)
        .map_err(|e| KeyError::Invalid(format!("{label} PEM: {e}")))
}

/// The fixed SubjectPublicKeyInfo prefix of every P-256 public key (id-ecPublicKey, prime256v1,
/// a 66-byte BIT STRING holding the uncompressed point).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl ServiceAccountTokens {
    /// From the PKI's PKCS#8 signing key and SubjectPublicKeyInfo verification key, which
    /// must belong together.
    pub fn new(
        private_key_pem: &str,
        public_key_pem: &str,
        settings: TokenSettings,
    ) -> Result<Self, KeyError> {
        if settings.issuers.is_empty() {
            return Err(KeyError::Invalid("no issuer".into()));
        }
        let rng = SystemRandom::new();
        let pkcs8 = pem_der(private_key_pem, "PRIVATE KEY")?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|e| KeyError::Invalid(format!("not an ECDSA P-256 PKCS#8 key: {e}")))?;
        let spki = pem_der(public_key_pem, "PUBLIC KEY")?;
        let point = pair.public_key().as_ref().to_vec();
        if spki.len() != P256_SPKI_PREFIX.len() + point.len()
            || spki[..P256_SPKI_PREFIX.len()] != P256_SPKI_PREFIX
            || spki[P256_SPKI_PREFIX.len()..] != point[..]
        {
            return Err(KeyError::Invalid(
                "the public key is not the signing key's P-256 public key".into(),
            ));
        }
        // Upstream's keyIDFromPublicKey: base64url(sha256(PKIX DER)).
        let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &spki));
        Ok(Self {
            key: SigningKey {
                pair,
                rng,
                point,
                kid,
            },
            settings,
        })
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// The issuer new tokens carry.
    pub fn issuer(&self) -> &str {
        &self.settings.issuers[0]
    }

    /// The key id (`kid` header and JWK).
    pub fn kid(&self) -> &str {
        &self.key.kid
    }

    /// A compact JWS over the claims: `{"alg":"ES256","kid":...}`.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = json!({"alg": "ES256", "kid": self.key.kid});
        let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
        out.push('.');
        out.push_str(
            &URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize")),
        );
        let sig = self
            .key
            .pair
            .sign(&self.key.rng, out.as_bytes())
            .expect("ECDSA signing with the system RNG does not fail");
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig.as_ref()));
        out
    }

    /// Check a token's signature, issuer, audience and validity window (not its objects:
    /// [`check_objects`] does that). `audiences` are those the caller accepts (the API
    /// audiences for requests, TokenReview's `spec.audiences`); the answer is the claims and
    /// the audiences both sides share.
    pub fn verify(
        &self,
        token: &str,
        audiences: &[String],
        now: i64,
    ) -> Result<(Claims, Vec<String>), TokenError> {
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::NotOurs);
        };
        // Like upstream's hasCorrectIssuer: only tokens naming one of our issuers are ours.
        let payload_json: Value = URL_SAFE_NO_PAD
            .decode(payload_b64)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::NotOurs)?;
        let iss = payload_json.get("iss").and_then(Value::as_str);
        if !iss.is_some_and(|i| self.settings.issuers.iter().any(|x| x == i)) {
            return Err(TokenError::NotOurs);
        }
        let header: Value = URL_SAFE_NO_PAD
            .decode(header_b64)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| rejected("failed to parse token header"))?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(rejected("invalid signature: unsupported algorithm"));
        }
        let sig = URL_SAFE_NO_PAD
            .decode(sig_b64)
            .map_err(|_| rejected("invalid signature"))?;
        let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.key.point)
            .verify(signed.as_bytes(), &sig)
            .map_err(|_| rejected("invalid signature"))?;
        let claims: Claims = serde_json::from_value(payload_json)
            .map_err(|e| rejected(format!("service account token claims are invalid: {e}")))?;
        // An empty `aud` means the API's own audiences (upstream's implicit audiences).
        let token_auds: &[String] = if claims.aud.is_empty() {
            &self.settings.api_audiences
        } else {
            &claims.aud
        };
        let shared: Vec<String> = token_auds
            .iter()
            .filter(|a| audiences.contains(a))
            .cloned()
            .collect();
        if shared.is_empty() && !self.settings.api_audiences.is_empty() {
            return Err(rejected(format!(
                "token audiences {} is invalid for the target audiences {}",
                go_quoted(token_auds),
                go_quoted(audiences)
            )));
        }
        if now + LEEWAY < claims.nbf {
            return Err(rejected("service account token is not valid yet"));
        }
        if now - LEEWAY > claims.exp {
            return Err(rejected("service account token has expired"));
        }
        if now + LEEWAY < claims.iat {
            return Err(rejected("service account token is issued in the future"));
        }
        if claims.kubernetes.namespace.is_empty()
            || claims.kubernetes.serviceaccount.name.is_empty()
        {
            return Err(rejected(
                "service account token does not name its service account",
            ));
        }
        Ok((claims, shared))
    }

    /// Mint a token for `POST .../serviceaccounts/{name}/token`: the TokenRequest answered
    /// (status filled in), as upstream's `TokenREST.Create`.
    pub async fn create_token(
        &self,
        objects: &dyn ObjectGetter,
        namespace: &str,
        name: &str,
        mut req: Value,
        now: i64,
    ) -> Result<Value, ApiError> {
        if !req.is_object() {
            return Err(ApiError::bad_request("the body must be a TokenRequest"));
        }
        let invalid = |errs: &[FieldError], obj_name: &str| {
            ApiError::invalid("TokenRequest", "authentication.k8s.io", obj_name, errs)
        };
        let meta_name = str_at(&req, "/metadata/name").to_string();
        if !meta_name.is_empty() && meta_name != name {
            return Err(invalid(
                &[FieldError::invalid(
                    "metadata.name",
                    json!(meta_name),
                    "must match the service account name if specified",
                )],
                name,
            ));
        }
        let meta_ns = str_at(&req, "/metadata/namespace").to_string();
        if !meta_ns.is_empty() && meta_ns != namespace {
            return Err(invalid(
                &[FieldError::invalid(
                    "metadata.namespace",
                    json!(meta_ns),
                    "must match the service account namespace if specified",
                )],
                name,
            ));
        }
        let sa_gr = GroupResource {
            group: "",
            resource: "serviceaccounts",
        };
        let sa = objects
            .get_object("ServiceAccount", Some(namespace), name)
            .await?
            .ok_or_else(|| ApiError::not_found(sa_gr, name))?;

        let mut spec = req
            .get("spec")
            .filter(|s| s.is_object())
            .cloned()
            .unwrap_or_else(|| json!({}));
        let audiences: Vec<String> = match spec.get("audiences") {
            None | Some(Value::Null) => vec![],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str().map(String::from).ok_or_else(|| {
                        ApiError::bad_request("spec.audiences must be a list of strings")
                    })
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "spec.audiences must be a list of strings",
                ))
            }
        };
        let audiences = if audiences.is_empty() {
            self.settings.api_audiences.clone()
        } else {
            audiences
        };
        let expiration = match spec.get("expirationSeconds") {
            None | Some(Value::Null) => DEFAULT_EXPIRATION_SECONDS,
            Some(v) => v.as_i64().ok_or_else(|| {
                ApiError::bad_request("spec.expirationSeconds must be an integer")
            })?,
        };
        spec["audiences"] = json!(audiences);
        spec["expirationSeconds"] = json!(expiration);

        let mut errs = Vec::new();
        if expiration < MIN_EXPIRATION_SECONDS {
            errs.push(FieldError::invalid(
                "spec.expirationSeconds",
                json!(expiration),
                "may not specify a duration less than 10 minutes",
            ));
        }
        if expiration > MAX_EXPIRATION_SECONDS {
            errs.push(FieldError::invalid(
                "spec.expirationSeconds",
                json!(expiration),
                "may not specify a duration larger than 2^32 seconds",
            ));
        }
        if !errs.is_empty() {
            return Err(invalid(&errs, ""));
        }

        let mut claims_k8s = KubernetesClaims {
            namespace: namespace.to_string(),
            serviceaccount: ObjectRef {
                name: name.to_string(),
                uid: str_at(&sa, "/metadata/uid").to_string(),
            },
            ..Default::default()
        };
        let mut pod_bound = false;
        if let Some(r) = spec.get("boundObjectRef").filter(|r| r.is_object()) {
            let api_version = str_at(r, "/apiVersion");
            let kind = str_at(r, "/kind");
            let ref_name = str_at(r, "/name");
            let ref_uid = str_at(r, "/uid");
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            let version = api_version.rsplit_once('/').map_or(api_version, |(_, v)| v);
            let gr = GroupResource {
                group,
                resource: kind,
            };
            let (obj, obj_ref) = match (group, kind) {
                ("", "Pod") | ("", "Secret") => {
                    let plural = if kind == "Pod" { "pods" } else { "secrets" };
                    let obj = objects
                        .get_object(kind, Some(namespace), ref_name)
                        .await?
                        .ok_or_else(|| {
                            ApiError::not_found(
                                GroupResource {
                                    group: "",
                                    resource: plural,
                                },
                                ref_name,
                            )
                        })?;
                    let o = object_ref(&obj);
                    (obj, o)
                }
                ("", "Node") => {
                    let obj = objects
                        .get_object("Node", None, ref_name)
                        .await?
                        .ok_or_else(|| {
                            ApiError::not_found(
                                GroupResource {
                                    group: "",
                                    resource: "nodes",
                                },
                                ref_name,
                            )
                        })?;
                    let o = object_ref(&obj);
                    (obj, o)
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "cannot bind token to object of type {group}/{version}, Kind={kind}"
                    )))
                }
            };
            if kind == "Pod" {
                let pod_sa = str_at(&obj, "/spec/serviceAccountName");
                if pod_sa != name {
                    return Err(ApiError::bad_request(format!("cannot bind token for serviceaccount {name:?} to pod running with different serviceaccount name.")));
                }
            }
            if !ref_uid.is_empty() && ref_uid != obj_ref.uid {
                return Err(ApiError::conflict(
                    gr,
                    ref_name,
                    &format!("the UID in the bound object reference ({ref_uid}) does not match the UID in record. The object might have been deleted and then recreated"),
                ));
            }
            match kind {
                "Pod" => {
                    pod_bound = true;
                    claims_k8s.pod = Some(obj_ref);
                    // Pod-bound tokens name the pod's node (upstream's
                    // ServiceAccountTokenPodNodeInfo); a node already gone is left out.
                    let node_name = str_at(&obj, "/spec/nodeName");
                    if !node_name.is_empty() {
                        if let Some(node) = objects.get_object("Node", None, node_name).await? {
                            claims_k8s.node = Some(object_ref(&node));
                        }
                    }
                }
                "Secret" => claims_k8s.secret = Some(obj_ref),
                _ => claims_k8s.node = Some(obj_ref),
            }
        }

        let mut exp_seconds = expiration;
        if self.settings.extend_expiration
            && pod_bound
            && expiration == WARN_ONLY_EXPIRATION_SECONDS
            && audiences
                .iter()
                .all(|a| self.settings.api_audiences.contains(a))
        {
            claims_k8s.warnafter = Some(now + expiration);
            exp_seconds = EXTENDED_EXPIRATION_SECONDS;
        }
        let claims = Claims {
            aud: audiences,
            exp: now + exp_seconds,
            iat: now,
            iss: self.issuer().to_string(),
            jti: uuid::Uuid::new_v4().to_string(),
            kubernetes: claims_k8s,
            nbf: now,
            sub: username(namespace, name),
        };
        let token = self.sign(&claims);
        req["apiVersion"] = json!("authentication.k8s.io/v1");
        req["kind"] = json!("TokenRequest");
        if !req.get("metadata").is_some_and(Value::is_object) {
            req["metadata"] = json!({});
        }
        req["metadata"]["name"] = json!(name);
        req["metadata"]["namespace"] = json!(namespace);
        req["metadata"]["creationTimestamp"] = json!(rfc3339(now));
        req["spec"] = spec;
        req["status"] = json!({
            "token": token,
            "expirationTimestamp": rfc3339(now + expiration),
        });
        Ok(req)
    }

    /// `/.well-known/openid-configuration`.
    pub fn openid_configuration(&self) -> Value {
        json!({
            "issuer": self.issuer(),
            "jwks_uri": self.settings.jwks_uri,
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// `/openid/v1/jwks`: the verification key as an EC JWK.
    pub fn jwks(&self) -> Value {
        let (x, y) = self.key.point[1..].split_at(32);
        json!({"keys": [{
            "use": "sig",
            "kty": "EC",
            "kid": self.key.kid,
            "crv": "P-256",
            "alg": "ES256",
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        }]})
    }
}

/// Upstream's `Validator.Validate` object checks: the service account still exists with the
/// claimed uid, and so does the bound pod, secret or node; objects deleted more than the
/// leeway ago count as gone.
pub async fn check_objects(
    claims: &Claims,
    objects: &dyn ObjectGetter,
    now: i64,
) -> Result<ServiceAccountInfo, TokenError> {
    let k = &claims.kubernetes;
    let ns = k.namespace.as_str();
    let get = |kind: &'static str, name: String| async move {
        let namespace = (kind != "Node").then_some(ns);
        objects
            .get_object(kind, namespace, &name)
            .await
            .map_err(|e| rejected(e.message))
    };
    let deleted_before_leeway = |obj: &Value| {
        obj.pointer("/metadata/deletionTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .is_some_and(|t| t.timestamp() < now - LEEWAY)
    };
    let sa_name = &k.serviceaccount.name;
    let sa = get("ServiceAccount", sa_name.clone())
        .await?
        .ok_or_else(|| rejected(format!("serviceaccounts {sa_name:?} not found")))?;
    if deleted_before_leeway(&sa) {
        return Err(rejected(format!(
            "service account {ns}/{sa_name} has been deleted"
        )));
    }
    let sa_uid = str_at(&sa, "/metadata/uid");
    if sa_uid != k.serviceaccount.uid {
        return Err(rejected(format!(
            "service account UID ({sa_uid}) does not match claim ({})",
            k.serviceaccount.uid
        )));
    }
    if let Some(secret_ref) = &k.secret {
        let secret = get("Secret", secret_ref.name.clone())
            .await?
            .ok_or_else(|| rejected(format!("secrets {:?} not found", secret_ref.name)))?;
        if deleted_before_leeway(&secret) {
            return Err(rejected("service account token has been invalidated"));
        }
        let uid = str_at(&secret, "/metadata/uid");
        if uid != secret_ref.uid {
            return Err(rejected(format!(
                "secret UID ({uid}) does not match service account secret ref claim ({})",
                secret_ref.uid
            )));
        }
    }
    let mut info = ServiceAccountInfo {
        namespace: ns.to_string(),
        name: sa_name.clone(),
        uid: k.serviceaccount.uid.clone(),
        credential_id: if claims.jti.is_empty() {
            String::new()
        } else {
            format!("JTI={}", claims.jti)
        },
        ..Default::default()
    };
    if let Some(pod_ref) = &k.pod {
        let pod = get("Pod", pod_ref.name.clone())
            .await?
            .ok_or_else(|| rejected(format!("pods {:?} not found", pod_ref.name)))?;
        if deleted_before_leeway(&pod) {
            return Err(rejected("service account token has been invalidated"));
        }
        let uid = str_at(&pod, "/metadata/uid");
        if uid != pod_ref.uid {
            return Err(rejected(format!(
                "pod UID ({uid}) does not match service account pod ref claim ({})",
                pod_ref.uid
            )));
        }
        info.pod_name = pod_ref.name.clone();
        info.pod_uid = pod_ref.uid.clone();
    }
    if let Some(node_ref) = &k.node {
        // A pod-bound token only reports its node; a node-bound one lives as long as the node.
        if k.pod.is_none() {
            let node = get("Node", node_ref.name.clone())
                .await?
                .ok_or_else(|| rejected(format!("nodes {:?} not found", node_ref.name)))?;
            if deleted_before_leeway(&node) {
                return Err(rejected("service account token has been invalidated"));
            }
            let uid = str_at(&node, "/metadata/uid");
            if uid != node_ref.uid {
                return Err(rejected(format!(
                    "node UID ({uid}) does not match service account node ref claim ({})",
                    node_ref.uid
                )));
            }
        }
        info.node_name = node_ref.name.clone();
        info.node_uid = node_ref.uid.clone();
    }
    if k.warnafter.is_some_and(|w| now > w) {
        // Upstream only records this (audit annotation + metric) so stale clients can be found.
        tracing::debug!(user = %username(ns, sa_name), "stale extended service account token in use");
    }
    Ok(info)
}

fn object_ref(obj: &Value) -> ObjectRef {
    ObjectRef {
        name: str_at(obj, "/metadata/name").to_string(),
        uid: str_at(obj, "/metadata/uid").to_string(),
    }
}

fn str_at<'a>(v: &'a Value, p: &str) -> &'a str {
    v.pointer(p).and_then(Value::as_str).unwrap_or("")
}

/// Go's `%q` of a string slice: `["a" "b"]`.
fn go_quoted(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(" "))
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    fn pem(label: &str, der: &[u8]) -> String {
        let b64 = STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    /// A fresh P-256 key as (PKCS#8 PEM, SPKI PEM).
    pub(crate) fn key_pems() -> (String, String) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        (pem("PRIVATE KEY", pkcs8.as_ref()), pem("PUBLIC KEY", &spki))
    }

    pub(crate) fn settings() -> TokenSettings {
        TokenSettings {
            issuers: vec![DEFAULT_ISSUER.to_string()],
            api_audiences: vec![DEFAULT_ISSUER.to_string()],
            jwks_uri: "https://127.0.0.1:6443/openid/v1/jwks".into(),
            extend_expiration: true,
        }
    }

    pub(crate) fn issuer() -> ServiceAccountTokens {
        let (k, p) = key_pems();
        ServiceAccountTokens::new(&k, &p, settings()).unwrap()
    }

    /// Objects by (kind, namespace, name).
    #[derive(Default)]
    pub(crate) struct FakeObjects(pub Mutex<HashMap<(String, String, String), Value>>);

    impl FakeObjects {
        pub(crate) fn put(&self, kind: &str, ns: &str, name: &str, obj: Value) {
            self.0
                .lock()
                .unwrap()
                .insert((kind.into(), ns.into(), name.into()), obj);
        }
        pub(crate) fn remove(&self, kind: &str, ns: &str, name: &str) {
            self.0
                .lock()
                .unwrap()
                .remove(&(kind.into(), ns.into(), name.into()));
        }
        pub(crate) fn with_default_account() -> Self {
            let f = Self::default();
            f.put(
                "ServiceAccount",
                "default",
                "default",
                json!({"metadata": {"name": "default", "namespace": "default", "uid": "sa-uid"}}),
            );
            f
        }
    }

    #[async_trait::async_trait]
    impl ObjectGetter for FakeObjects {
        async fn get_object(
            &self,
            kind: &str,
            namespace: Option<&str>,
            name: &str,
        ) -> Result<Option<Value>, ApiError> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .get(&(kind.into(), namespace.unwrap_or("").into(), name.into()))
                .cloned())
        }
    }

    const NOW: i64 = 1_800_000_000;

    fn claims(iss: &str, aud: &[&str]) -> Claims {
        Claims {
            aud: aud.iter().map(|s| s.to_string()).collect(),
            exp: NOW + 3600,
            iat: NOW,
            iss: iss.into(),
            jti: "jti-1".into(),
            kubernetes: KubernetesClaims {
                namespace: "default".into(),
                serviceaccount: ObjectRef {
                    name: "default".into(),
                    uid: "sa-uid".into(),
                },
                ..Default::default()
            },
            nbf: NOW,
            sub: "system:serviceaccount:default:default".into(),
        }
    }

    fn api() -> Vec<String> {
        vec![DEFAULT_ISSUER.to_string()]
    }

    fn b64json(part: &str) -> Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    #[test]
    fn signed_tokens_verify_and_carry_upstream_claims() {
        let iss = issuer();
        let c = claims(DEFAULT_ISSUER, &[DEFAULT_ISSUER]);
        let token = iss.sign(&c);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(b64json(parts[0]), json!({"alg": "ES256", "kid": iss.kid()}));
        let payload = b64json(parts[1]);
        assert_eq!(payload["aud"], json!([DEFAULT_ISSUER]));
        assert_eq!(payload["sub"], "system:serviceaccount:default:default");
        assert_eq!(
            payload["kubernetes.io"],
            json!({"namespace": "default", "serviceaccount": {"name": "default", "uid": "sa-uid"}})
        );
        assert_eq!(URL_SAFE_NO_PAD.decode(parts[2]).unwrap().len(), 64);
        let (got, shared) = iss.verify(&token, &api(), NOW).unwrap();
        assert_eq!(got, c);
        assert_eq!(shared, api());
    }

    #[test]
    fn verification_failures_as_upstream() {
        let iss = issuer();
        let good = iss.sign(&claims(DEFAULT_ISSUER, &[DEFAULT_ISSUER]));
        let rej = |s: &str| Err(TokenError::Rejected(s.to_string()));
        // Signature: another key with the same issuer, a tampered payload, a tampered signature.
        let other = issuer().sign(&claims(DEFAULT_ISSUER, &[DEFAULT_ISSUER]));
        assert_eq!(iss.verify(&other, &api(), NOW), rej("invalid signature"));
        let parts: Vec<&str> = good.split('.').collect();
        let mut c = claims(DEFAULT_ISSUER, &[DEFAULT_ISSUER]);
        c.kubernetes.serviceaccount.name = "admin".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
        assert_eq!(iss.verify(&forged, &api(), NOW), rej("invalid signature"));
        let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        sig[10] ^= 1;
        let bad_sig = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));
        assert_eq!(iss.verify(&bad_sig, &api(), NOW), rej("invalid signature"));
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            parts[1]
        );
        assert!(matches!(
            iss.verify(&none_alg, &api(), NOW),
            Err(TokenError::Rejected(_))
        ));
        // Time: expiry and not-before with 60 s of leeway.
        assert!(iss.verify(&good, &api(), NOW + 3600 + 60).is_ok());
        assert_eq!(
            iss.verify(&good, &api(), NOW + 3600 + 61),
            rej("service account token has expired")
        );
        assert!(iss.verify(&good, &api(), NOW - 60).is_ok());
        assert_eq!(
            iss.verify(&good, &api(), NOW - 61),
            rej("service account token is not valid yet")
        );
        // Audience.
        let vault = iss.sign(&claims(DEFAULT_ISSUER, &["vault"]));
        assert_eq!(
            iss.verify(&vault, &api(), NOW),
            rej(
                r#"token audiences ["vault"] is invalid for the target audiences ["https://kubernetes.default.svc.cluster.local"]"#
            )
        );
        let (_, shared) = iss.verify(&vault, &["vault".into()], NOW).unwrap();
        assert_eq!(shared, ["vault"]);
        // Issuer: someone else's token is not ours (the next authenticator may know it), and
        // neither is something that is not a JWT.
        let foreign = iss.sign(&claims("https://issuer.example.com", &[DEFAULT_ISSUER]));
        assert_eq!(iss.verify(&foreign, &api(), NOW), Err(TokenError::NotOurs));
        assert_eq!(iss.verify("s3cret", &api(), NOW), Err(TokenError::NotOurs));
        assert_eq!(iss.verify("a.b.c", &api(), NOW), Err(TokenError::NotOurs));
    }

    #[test]
    fn rotated_issuers_are_accepted() {
        let (k, p) = key_pems();
        let mut s = settings();
        s.issuers = vec!["https://new.example".into(), "https://old.example".into()];
        let iss = ServiceAccountTokens::new(&k, &p, s).unwrap();
        let old = iss.sign(&claims("https://old.example", &[DEFAULT_ISSUER]));
        assert!(iss.verify(&old, &api(), NOW).is_ok());
        assert_eq!(iss.issuer(), "https://new.example");
    }

    #[test]
    fn keys_must_match_and_publish_as_jwk() {
        let (k1, _) = key_pems();
        let (_, p2) = key_pems();
        assert!(ServiceAccountTokens::new(&k1, &p2, settings()).is_err());
        assert!(ServiceAccountTokens::new("junk", &p2, settings()).is_err());
        let (k, p) = key_pems();
        let iss = ServiceAccountTokens::new(&k, &p, settings()).unwrap();
        let jwks = iss.jwks();
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        assert_eq!(key["alg"], "ES256");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["kid"], iss.kid());
        let x = URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap();
        let y = URL_SAFE_NO_PAD.decode(key["y"].as_str().unwrap()).unwrap();
        let spki = pem_der(&p, "PUBLIC KEY").unwrap();
        assert_eq!([&[4u8][..], &x, &y].concat(), spki[26..]);
        // kid = base64url(sha256(SPKI DER)), 43 characters.
        assert_eq!(iss.kid().len(), 43);
        let cfg = iss.openid_configuration();
        assert_eq!(cfg["issuer"], DEFAULT_ISSUER);
        assert_eq!(cfg["jwks_uri"], "https://127.0.0.1:6443/openid/v1/jwks");
        assert_eq!(
            cfg["id_token_signing_alg_values_supported"],
            json!(["ES256"])
        );
    }

    #[tokio::test]
    async fn token_requests_default_validate_and_bind() {
        let iss = issuer();
        let objs = FakeObjects::with_default_account();
        let tr = iss
            .create_token(&objs, "default", "default", json!({"spec": {}}), NOW)
            .await
            .unwrap();
        assert_eq!(tr["kind"], "TokenRequest");
        assert_eq!(tr["spec"]["expirationSeconds"], 3600);
        assert_eq!(tr["spec"]["audiences"], json!([DEFAULT_ISSUER]));
        assert_eq!(tr["status"]["expirationTimestamp"], rfc3339(NOW + 3600));
        let (c, _) = iss
            .verify(tr["status"]["token"].as_str().unwrap(), &api(), NOW)
            .unwrap();
        assert_eq!(c.exp, NOW + 3600);
        assert_eq!(c.kubernetes.serviceaccount.uid, "sa-uid");
        assert!(uuid::Uuid::parse_str(&c.jti).is_ok());

        let e = iss
            .create_token(
                &objs,
                "default",
                "default",
                json!({"spec": {"expirationSeconds": 60}}),
                NOW,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(e.message, "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes");
        let e = iss
            .create_token(&objs, "default", "nobody", json!({}), NOW)
            .await
            .unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (404, "serviceaccounts \"nobody\" not found")
        );

        let bound = |kind: &str, name: &str, uid: &str, secs: i64| json!({"spec": {"expirationSeconds": secs, "boundObjectRef": {"apiVersion": "v1", "kind": kind, "name": name, "uid": uid}}});
        let e = iss
            .create_token(
                &objs,
                "default",
                "default",
                bound("Pod", "p", "", 3600),
                NOW,
            )
            .await
            .unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (404, "pods \"p\" not found"));
        objs.put("Pod", "default", "p", json!({"metadata": {"name": "p", "uid": "pod-uid"}, "spec": {"serviceAccountName": "default", "nodeName": "n1"}}));
        objs.put(
            "Node",
            "",
            "n1",
            json!({"metadata": {"name": "n1", "uid": "node-uid"}}),
        );
        let e = iss
            .create_token(
                &objs,
                "default",
                "default",
                bound("Pod", "p", "other", 3600),
                NOW,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, 409);
        assert_eq!(e.message, "Operation cannot be fulfilled on Pod \"p\": the UID in the bound object reference (other) does not match the UID in record. The object might have been deleted and then recreated");
        let e = iss
            .create_token(
                &objs,
                "default",
                "default",
                bound("ConfigMap", "c", "", 3600),
                NOW,
            )
            .await
            .unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                400,
                "cannot bind token to object of type /v1, Kind=ConfigMap"
            )
        );

        let tr = iss
            .create_token(
                &objs,
                "default",
                "default",
                bound("Pod", "p", "pod-uid", 3607),
                NOW,
            )
            .await
            .unwrap();
        let (c, _) = iss
            .verify(tr["status"]["token"].as_str().unwrap(), &api(), NOW)
            .unwrap();
        assert_eq!(
            c.kubernetes.pod,
            Some(ObjectRef {
                name: "p".into(),
                uid: "pod-uid".into()
            })
        );
        assert_eq!(
            c.kubernetes.node,
            Some(ObjectRef {
                name: "n1".into(),
                uid: "node-uid".into()
            })
        );
        // The kubelet's 3607 s pod-bound token is extended, the answer still says 3607 s.
        assert_eq!(c.exp, NOW + EXTENDED_EXPIRATION_SECONDS);
        assert_eq!(c.kubernetes.warnafter, Some(NOW + 3607));
        assert_eq!(tr["status"]["expirationTimestamp"], rfc3339(NOW + 3607));

        objs.put("Pod", "default", "q", json!({"metadata": {"name": "q", "uid": "q-uid"}, "spec": {"serviceAccountName": "builder"}}));
        let e = iss
            .create_token(
                &objs,
                "default",
                "default",
                bound("Pod", "q", "", 3600),
                NOW,
            )
            .await
            .unwrap_err();
        assert_eq!(e.message, "cannot bind token for serviceaccount \"default\" to pod running with different serviceaccount name.");
    }

    #[tokio::test]
    async fn tokens_of_deleted_objects_stop_validating() {
        let iss = issuer();
        let objs = FakeObjects::with_default_account();
        objs.put("Pod", "default", "p", json!({"metadata": {"name": "p", "uid": "pod-uid"}, "spec": {"serviceAccountName": "default"}}));
        let tr = iss
            .create_token(&objs, "default", "default", json!({"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p"}}}), NOW)
            .await
            .unwrap();
        let token = tr["status"]["token"].as_str().unwrap();
        let (c, _) = iss.verify(token, &api(), NOW).unwrap();
        let info = check_objects(&c, &objs, NOW).await.unwrap();
        let user = info.user();
        assert_eq!(user.info.name, "system:serviceaccount:default:default");
        assert_eq!(user.info.uid, "sa-uid");
        assert_eq!(
            user.info.groups,
            ["system:serviceaccounts", "system:serviceaccounts:default"]
        );
        assert_eq!(user.extra[EXTRA_POD_NAME], ["p"]);
        assert_eq!(user.extra[EXTRA_POD_UID], ["pod-uid"]);
        assert_eq!(user.extra[EXTRA_CREDENTIAL_ID], [format!("JTI={}", c.jti)]);

        // Terminating pods count as gone once their deletion time is a leeway in the past.
        objs.put("Pod", "default", "p", json!({"metadata": {"name": "p", "uid": "pod-uid", "deletionTimestamp": rfc3339(NOW - 30)}}));
        assert!(check_objects(&c, &objs, NOW).await.is_ok());
        objs.put("Pod", "default", "p", json!({"metadata": {"name": "p", "uid": "pod-uid", "deletionTimestamp": rfc3339(NOW - 61)}}));
        assert_eq!(
            check_objects(&c, &objs, NOW).await,
            Err(TokenError::Rejected(
                "service account token has been invalidated".into()
            ))
        );
        // Recreated under the same name.
        objs.put(
            "Pod",
            "default",
            "p",
            json!({"metadata": {"name": "p", "uid": "new-uid"}}),
        );
        assert_eq!(
            check_objects(&c, &objs, NOW).await,
            Err(TokenError::Rejected(
                "pod UID (new-uid) does not match service account pod ref claim (pod-uid)".into()
            ))
        );
        objs.remove("Pod", "default", "p");
        assert_eq!(
            check_objects(&c, &objs, NOW).await,
            Err(TokenError::Rejected("pods \"p\" not found".into()))
        );
        // The service account recreated or deleted invalidates every token of it.
        let unbound = iss.sign(&claims(DEFAULT_ISSUER, &[DEFAULT_ISSUER]));
        let (c, _) = iss.verify(&unbound, &api(), NOW).unwrap();
        assert!(check_objects(&c, &objs, NOW).await.is_ok());
        objs.put(
            "ServiceAccount",
            "default",
            "default",
            json!({"metadata": {"name": "default", "uid": "sa-2"}}),
        );
        assert_eq!(
            check_objects(&c, &objs, NOW).await,
            Err(TokenError::Rejected(
                "service account UID (sa-2) does not match claim (sa-uid)".into()
            ))
        );
        objs.remove("ServiceAccount", "default", "default");
        assert_eq!(
            check_objects(&c, &objs, NOW).await,
            Err(TokenError::Rejected(
                "serviceaccounts \"default\" not found".into()
            ))
        );
    }
}
