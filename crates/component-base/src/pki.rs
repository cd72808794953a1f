//! The cluster's certificate authority and the key material every component starts from.
//!
//! [`Pki::load_or_create`] turns a directory into a working PKI: on first start it creates an
//! ECDSA P-256 CA, the API server's serving certificate, an admin client certificate, the client
//! certificate the API server presents to kubelets and the service-account signing key, and
//! writes them as PEM files (keys `0600`); on later starts it reuses them. A leaf certificate
//! is reissued from the same CA — never silently replaced by a new CA — when it is missing,
//! expires within [`RENEW_BEFORE_DAYS`], no longer matches its key or CA, or (for the serving
//! certificate) lacks a requested subject alternative name. A CA that is half present (only one
//! of `ca.crt`/`ca.key`) or expired is an error: replacing it would invalidate every credential
//! handed out so far, which must be an operator's decision.
//!
//! Files are written to a temporary name and renamed into place, so a crash never leaves a
//! truncated certificate behind.

use std::cell::RefCell;
use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SignatureAlgorithm, SigningKey,
    PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

/// File name of the CA certificate.
pub const CA_CERT_FILE: &str = "ca.crt";
/// File name of the CA private key (mode `0600`).
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the API server's serving certificate.
pub const APISERVER_CERT_FILE: &str = "apiserver.crt";
/// File name of the API server's serving key (mode `0600`).
pub const APISERVER_KEY_FILE: &str = "apiserver.key";
/// File name of the admin client certificate.
pub const ADMIN_CERT_FILE: &str = "admin.crt";
/// File name of the admin client key (mode `0600`).
pub const ADMIN_KEY_FILE: &str = "admin.key";
/// File name of the client certificate the API server presents to kubelets (kubeadm's name).
pub const KUBELET_CLIENT_CERT_FILE: &str = "apiserver-kubelet-client.crt";
/// File name of the key of [`KUBELET_CLIENT_CERT_FILE`] (mode `0600`).
pub const KUBELET_CLIENT_KEY_FILE: &str = "apiserver-kubelet-client.key";
/// File name of the service-account token signing key, PKCS#8 ECDSA P-256 (mode `0600`).
pub const SA_KEY_FILE: &str = "sa.key";
/// File name of the service-account token verification key (SubjectPublicKeyInfo PEM).
pub const SA_PUBLIC_KEY_FILE: &str = "sa.pub";

/// Common name of the CA certificate.
pub const CA_COMMON_NAME: &str = "kubernetes-ca";
/// Common name of the API server's serving certificate.
pub const APISERVER_COMMON_NAME: &str = "kube-apiserver";
/// User name carried by the admin client certificate.
pub const ADMIN_USER: &str = "kubernetes-admin";
/// User name carried by the API server's kubelet client certificate (in [`ADMIN_GROUP`], as
/// kubeadm issues it, so a kubelet's authorizer lets the API server in).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";
/// Group carried by the admin client certificate; upstream's default RBAC binds it to
/// `cluster-admin` and the authorizer short-circuits it.
pub const ADMIN_GROUP: &str = "system:masters";

/// Names every API server serving certificate carries besides the caller's: loopback and the
/// in-cluster DNS names of the `kubernetes` Service.
pub const DEFAULT_APISERVER_SANS: &[&str] = &[
    "localhost",
    "127.0.0.1",
    "::1",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
];

/// How long the CA is valid (10 years).
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// How long issued leaf certificates are valid (1 year).
pub const LEAF_VALIDITY_DAYS: i64 = 365;
/// A reused leaf certificate expiring within this many days is reissued on load.
pub const RENEW_BEFORE_DAYS: i64 = 30;

/// Certificates start being valid slightly in the past so that a peer whose clock runs a little
/// behind ours does not reject a certificate issued a moment ago.
const BACKDATE: Duration = Duration::minutes(5);

/// Organization attributes after the first are written under placeholder attribute types
/// `2.5.4.(100 + i)` and patched to `2.5.4.10` (O) before signing; see [`GroupPatchSigner`].
/// Placeholders stay below 128 so each one encodes to the same three bytes as `2.5.4.10`.
const PLACEHOLDER_BASE: u8 = 100;
/// The most groups one certificate can carry: one real O plus one per placeholder.
pub const MAX_CERT_GROUPS: usize = 1 + (128 - PLACEHOLDER_BASE as usize);

/// Errors from creating, loading or using the PKI.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file on disk is not usable as it stands and will not be replaced automatically.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A requested subject alternative name is neither an IP address nor a valid DNS name.
    #[error("invalid subject alternative name {0:?}")]
    InvalidSan(String),
    /// The requested certificate subject cannot be encoded.
    #[error("invalid certificate subject: {0}")]
    InvalidSubject(String),
    /// Key generation or certificate signing failed.
    #[error("generating certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

type Result<T, E = PkiError> = std::result::Result<T, E>;

/// The cluster CA plus the credentials created alongside it.
///
/// Cheap to clone; `Debug` never prints private keys.
#[derive(Clone)]
pub struct Pki {
    dir: PathBuf,
    ca_cert_pem: String,
    ca_cert_der: CertificateDer<'static>,
    ca_key_pem: String,
    ca_key: Arc<KeyPair>,
    apiserver_cert_pem: String,
    apiserver_key_pem: String,
    admin_cert_pem: String,
    admin_key_pem: String,
    kubelet_client_cert_pem: String,
    kubelet_client_key_pem: String,
    sa_key_pem: String,
    sa_public_key_pem: String,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// What a certificate may be used for.
#[derive(Clone, Copy)]
enum Usage {
    Server,
    Client,
}

impl Pki {
    /// Loads the PKI from `dir`, creating whatever is missing (see the module docs).
    ///
    /// `sans` are extra subject alternative names for the API server's serving certificate
    /// (IP addresses or DNS names) on top of [`DEFAULT_APISERVER_SANS`]; a reused certificate
    /// lacking any of them is reissued from the existing CA.
    pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<Pki> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| io_err(dir, source))?;

        let (ca_cert_pem, ca_key_pem) = load_or_create_ca(dir)?;
        let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| invalid(dir, CA_KEY_FILE, e))?;
        let ca_cert_der =
            pem_to_cert_der(&ca_cert_pem).map_err(|reason| invalid(dir, CA_CERT_FILE, reason))?;

        let mut pki = Pki {
            dir: dir.to_path_buf(),
            ca_cert_pem,
            ca_cert_der,
            ca_key_pem,
            ca_key: Arc::new(ca_key),
            apiserver_cert_pem: String::new(),
            apiserver_key_pem: String::new(),
            admin_cert_pem: String::new(),
            admin_key_pem: String::new(),
            kubelet_client_cert_pem: String::new(),
            kubelet_client_key_pem: String::new(),
            sa_key_pem: String::new(),
            sa_public_key_pem: String::new(),
        };

        let wanted_sans = apiserver_sans(sans)?;
        let (cert, key) = pki.load_or_issue_leaf(
            APISERVER_CERT_FILE,
            APISERVER_KEY_FILE,
            |leaf| missing_sans(leaf, &wanted_sans),
            || pki.issue_serving_cert(APISERVER_COMMON_NAME, &wanted_sans),
        )?;
        pki.apiserver_cert_pem = cert;
        pki.apiserver_key_pem = key;

        let (cert, key) = pki.load_or_issue_leaf(
            ADMIN_CERT_FILE,
            ADMIN_KEY_FILE,
            |leaf| match subject_common_name(leaf) {
                Some(cn) if cn == ADMIN_USER => None,
                other => Some(format!("common name is {other:?}, want {ADMIN_USER:?}")),
            },
            || pki.issue_client_cert(ADMIN_USER, &[ADMIN_GROUP]),
        )?;
        pki.admin_cert_pem = cert;
        pki.admin_key_pem = key;

        let (cert, key) = pki.load_or_issue_leaf(
            KUBELET_CLIENT_CERT_FILE,
            KUBELET_CLIENT_KEY_FILE,
            |leaf| match subject_common_name(leaf) {
                Some(cn) if cn == KUBELET_CLIENT_USER => None,
                other => Some(format!(
                    "common name is {other:?}, want {KUBELET_CLIENT_USER:?}"
                )),
            },
            || pki.issue_client_cert(KUBELET_CLIENT_USER, &[ADMIN_GROUP]),
        )?;
        pki.kubelet_client_cert_pem = cert;
        pki.kubelet_client_key_pem = key;

        let (sa_key_pem, sa_public_key_pem) = load_or_create_sa_key(dir)?;
        pki.sa_key_pem = sa_key_pem;
        pki.sa_public_key_pem = sa_public_key_pem;
        Ok(pki)
    }

    /// Issues a client certificate for user `cn` in `groups` (subject CN and O attributes, the
    /// way upstream's x509 authenticator reads them), signed by the CA and valid for
    /// [`LEAF_VALIDITY_DAYS`]. Returns `(cert_pem, key_pem)`; nothing is written to disk.
    ///
    /// At most [`MAX_CERT_GROUPS`] groups fit in one certificate.
    pub fn issue_client_cert(&self, cn: &str, groups: &[&str]) -> Result<(String, String)> {
        self.issue(cn, groups, &[], Usage::Client)
    }

    /// Issues a serving certificate with subject CN `cn` valid for exactly `sans` (IP addresses
    /// or DNS names; no defaults are added), signed by the CA and valid for
    /// [`LEAF_VALIDITY_DAYS`]. Returns `(cert_pem, key_pem)`; nothing is written to disk.
    pub fn issue_serving_cert(&self, cn: &str, sans: &[String]) -> Result<(String, String)> {
        let sans = sans
            .iter()
            .map(|s| parse_san(s))
            .collect::<Result<Vec<_>>>()?;
        self.issue(cn, &[], &sans, Usage::Server)
    }

    /// The directory the PKI lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA certificate (PEM): the trust anchor every component is configured with.
    pub fn ca_cert_pem(&self) -> &str {
        &self.ca_cert_pem
    }

    /// The CA certificate (DER).
    pub fn ca_cert_der(&self) -> &CertificateDer<'static> {
        &self.ca_cert_der
    }

    /// The CA private key (PKCS#8 PEM), e.g. for a CSR signing controller.
    pub fn ca_key_pem(&self) -> &str {
        &self.ca_key_pem
    }

    /// The API server's serving certificate (PEM).
    pub fn apiserver_cert_pem(&self) -> &str {
        &self.apiserver_cert_pem
    }

    /// The API server's serving key (PKCS#8 PEM).
    pub fn apiserver_key_pem(&self) -> &str {
        &self.apiserver_key_pem
    }

    /// The admin client certificate (PEM): user [`ADMIN_USER`] in group [`ADMIN_GROUP`].
    pub fn admin_cert_pem(&self) -> &str {
        &self.admin_cert_pem
    }

    /// The admin client key (PKCS#8 PEM).
    pub fn admin_key_pem(&self) -> &str {
        &self.admin_key_pem
    }

    /// The client certificate the API server presents to kubelets (PEM): user
    /// [`KUBELET_CLIENT_USER`] in group [`ADMIN_GROUP`].
    pub fn kubelet_client_cert_pem(&self) -> &str {
        &self.kubelet_client_cert_pem
    }

    /// The key of [`Pki::kubelet_client_cert_pem`] (PKCS#8 PEM).
    pub fn kubelet_client_key_pem(&self) -> &str {
        &self.kubelet_client_key_pem
    }

    /// The service-account token signing key: ECDSA P-256, PKCS#8 PEM (for ES256 tokens).
    pub fn service_account_key_pem(&self) -> &str {
        &self.sa_key_pem
    }

    /// The service-account token verification key (SubjectPublicKeyInfo PEM).
    pub fn service_account_public_key_pem(&self) -> &str {
        &self.sa_public_key_pem
    }

    /// Returns the reusable leaf in `cert_file`/`key_file`, or issues (and writes) a new one.
    ///
    /// `check` returns why an otherwise valid certificate does not fit (e.g. missing SANs).
    fn load_or_issue_leaf(
        &self,
        cert_file: &str,
        key_file: &str,
        check: impl Fn(&X509Certificate<'_>) -> Option<String>,
        issue: impl FnOnce() -> Result<(String, String)>,
    ) -> Result<(String, String)> {
        let cert_path = self.dir.join(cert_file);
        let key_path = self.dir.join(key_file);
        let existing = (read_optional(&cert_path)?, read_optional(&key_path)?);
        let reason = match existing {
            (Some(cert), Some(key)) => match self.leaf_problem(&cert, &key, &check) {
                None => return Ok((cert, key)),
                problem => problem,
            },
            _ => None,
        };
        match &reason {
            Some(reason) => {
                tracing::info!(cert = %cert_path.display(), %reason, "reissuing certificate")
            }
            None => tracing::info!(cert = %cert_path.display(), "issuing certificate"),
        }
        let (cert, key) = issue()?;
        write(&cert_path, &cert, 0o644)?;
        write(&key_path, &key, 0o600)?;
        Ok((cert, key))
    }

    /// Why the leaf `cert_pem`/`key_pem` cannot be reused, or `None` if it can.
    fn leaf_problem(
        &self,
        cert_pem: &str,
        key_pem: &str,
        check: &impl Fn(&X509Certificate<'_>) -> Option<String>,
    ) -> Option<String> {
        let der = match pem_to_cert_der(cert_pem) {
            Ok(der) => der,
            Err(reason) => return Some(reason),
        };
        let leaf = match x509_parser::parse_x509_certificate(&der) {
            Ok((_, leaf)) => leaf,
            Err(e) => return Some(format!("unparsable certificate: {e}")),
        };
        let key = match KeyPair::from_pem(key_pem) {
            Ok(key) => key,
            Err(e) => return Some(format!("unparsable key: {e}")),
        };
        if leaf.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Some("certificate does not match its key".into());
        }
        let ca = match x509_parser::parse_x509_certificate(&self.ca_cert_der) {
            Ok((_, ca)) => ca,
            Err(e) => return Some(format!("unparsable CA certificate: {e}")),
        };
        if leaf.verify_signature(Some(ca.public_key())).is_err() {
            return Some("certificate was not signed by the current CA".into());
        }
        let renew_at = OffsetDateTime::now_utc() + Duration::days(RENEW_BEFORE_DAYS);
        if leaf.validity().not_after.to_datetime() < renew_at {
            return Some(format!(
                "certificate expires within {RENEW_BEFORE_DAYS} days"
            ));
        }
        check(&leaf)
    }

    fn issue(
        &self,
        cn: &str,
        groups: &[&str],
        sans: &[SanType],
        usage: Usage,
    ) -> Result<(String, String)> {
        if cn.is_empty() {
            return Err(PkiError::InvalidSubject("empty common name".into()));
        }
        if groups.len() > MAX_CERT_GROUPS {
            return Err(PkiError::InvalidSubject(format!(
                "{} groups requested, at most {MAX_CERT_GROUPS} fit in a certificate",
                groups.len()
            )));
        }
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.not_before = now - BACKDATE;
        params.not_after = now + Duration::days(LEAF_VALIDITY_DAYS);
        params.distinguished_name = leaf_subject(cn, groups);
        params.subject_alt_names = sans.to_vec();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![match usage {
            Usage::Server => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::Client => ExtendedKeyUsagePurpose::ClientAuth,
        }];
        params.use_authority_key_identifier_extension = true;

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let signer = GroupPatchSigner {
            key: &self.ca_key,
            placeholders: groups.len().saturating_sub(1),
            tbs: RefCell::new(None),
        };
        let issuer = Issuer::from_ca_cert_der(&self.ca_cert_der, &signer)?;
        let cert = params.signed_by(&key, &issuer)?;
        let der = signer
            .finish(cert.der())
            .map_err(PkiError::InvalidSubject)?;
        Ok((pem_encode("CERTIFICATE", &der), key.serialize_pem()))
    }
}

/// The subject `O=groups[0], O=..., CN=cn`, with groups after the first under placeholder types.
///
/// rcgen keeps one value per attribute type, but upstream reads every O attribute as a group,
/// so a user in several groups needs several O attributes.
fn leaf_subject(cn: &str, groups: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    if let Some((first, rest)) = groups.split_first() {
        dn.push(DnType::OrganizationName, *first);
        for (i, group) in rest.iter().enumerate() {
            dn.push(DnType::CustomDnType(placeholder_oid(i)), *group);
        }
    }
    dn.push(DnType::CommonName, cn);
    dn
}

fn placeholder_oid(i: usize) -> Vec<u64> {
    vec![2, 5, 4, u64::from(PLACEHOLDER_BASE) + i as u64]
}

/// Signs with the CA key after rewriting placeholder attribute types to O (`2.5.4.10`).
///
/// Each placeholder OID encodes to the same number of bytes as O, so the rewrite keeps every
/// DER length intact; the same rewrite is then applied to the TBS bytes inside the finished
/// certificate ([`GroupPatchSigner::finish`]), making the signature match what is shipped.
struct GroupPatchSigner<'a> {
    key: &'a KeyPair,
    placeholders: usize,
    /// What the last `sign` call saw, or why patching it failed.
    tbs: RefCell<Option<Result<SignedTbs, String>>>,
}

/// The to-be-signed certificate bytes as rcgen wrote them and as actually signed.
struct SignedTbs {
    original: Vec<u8>,
    patched: Vec<u8>,
}

impl GroupPatchSigner<'_> {
    fn finish(&self, cert_der: &[u8]) -> Result<Vec<u8>, String> {
        let SignedTbs { original, patched } = self
            .tbs
            .borrow_mut()
            .take()
            .ok_or_else(|| "certificate was never signed".to_string())??;
        let at = cert_der
            .windows(original.len())
            .position(|w| w == original.as_slice())
            .ok_or_else(|| "signed data not found in certificate".to_string())?;
        let mut der = cert_der.to_vec();
        der[at..at + patched.len()].copy_from_slice(&patched);
        Ok(der)
    }
}

/// Rewrites `OID 2.5.4.(PLACEHOLDER_BASE+i)` followed by a UTF8String tag to `OID 2.5.4.10`.
fn patch_placeholders(tbs: &[u8], placeholders: usize) -> Result<Vec<u8>, String> {
    let mut out = tbs.to_vec();
    for i in 0..placeholders {
        let needle = [0x06, 0x03, 0x55, 0x04, PLACEHOLDER_BASE + i as u8, 0x0c];
        let hits: Vec<usize> = out
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(at, _)| at)
            .collect();
        let [at] = hits[..] else {
            return Err(format!(
                "group attribute {} found {} times in the certificate, want once",
                i + 1,
                hits.len()
            ));
        };
        out[at + 4] = 0x0a;
    }
    Ok(out)
}

impl PublicKeyData for GroupPatchSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        self.key.der_bytes()
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.key.algorithm()
    }
}

impl SigningKey for GroupPatchSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let patched = patch_placeholders(msg, self.placeholders);
        let to_sign = patched.as_deref().unwrap_or(msg);
        let signature = self.key.sign(to_sign)?;
        *self.tbs.borrow_mut() = Some(patched.map(|patched| SignedTbs {
            original: msg.to_vec(),
            patched,
        }));
        Ok(signature)
    }
}

/// Loads `ca.crt`/`ca.key`, or creates them when both are absent. Returns `(cert, key)`.
///
/// Leaves issued by a previous CA need no special handling here: they fail the signature
/// check in [`Pki::leaf_problem`] and get reissued.
fn load_or_create_ca(dir: &Path) -> Result<(String, String)> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    match (read_optional(&cert_path)?, read_optional(&key_path)?) {
        (Some(cert), Some(key)) => {
            let der =
                pem_to_cert_der(&cert).map_err(|reason| invalid(dir, CA_CERT_FILE, reason))?;
            let (_, ca) = x509_parser::parse_x509_certificate(&der)
                .map_err(|e| invalid(dir, CA_CERT_FILE, e))?;
            let key_pair = KeyPair::from_pem(&key).map_err(|e| invalid(dir, CA_KEY_FILE, e))?;
            if ca.public_key().subject_public_key.data.as_ref() != key_pair.public_key_raw() {
                return Err(invalid(dir, CA_KEY_FILE, "does not match ca.crt"));
            }
            if !ca.is_ca() {
                return Err(invalid(dir, CA_CERT_FILE, "not a CA certificate"));
            }
            if !ca.validity().is_valid() {
                return Err(invalid(
                    dir,
                    CA_CERT_FILE,
                    "CA certificate is expired or not yet valid; replace the PKI",
                ));
            }
            Ok((cert, key))
        }
        (None, None) => {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let now = OffsetDateTime::now_utc();
            let mut params = CertificateParams::default();
            params.not_before = now - BACKDATE;
            params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
            params.distinguished_name = DistinguishedName::new();
            params
                .distinguished_name
                .push(DnType::CommonName, CA_COMMON_NAME);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let cert = params.self_signed(&key)?.pem();
            let key = key.serialize_pem();
            // Key first: a crash in between leaves a lone key, which the next start reports
            // instead of pairing a fresh key with a certificate that has no key.
            write(&key_path, &key, 0o600)?;
            write(&cert_path, &cert, 0o644)?;
            tracing::info!(dir = %dir.display(), "created cluster CA");
            Ok((cert, key))
        }
        (Some(_), None) => Err(invalid(dir, CA_KEY_FILE, "missing while ca.crt exists")),
        (None, Some(_)) => Err(invalid(dir, CA_CERT_FILE, "missing while ca.key exists")),
    }
}

/// Loads or creates `sa.key`, (re)writing `sa.pub` from it when absent or stale.
fn load_or_create_sa_key(dir: &Path) -> Result<(String, String)> {
    let key_path = dir.join(SA_KEY_FILE);
    let pub_path = dir.join(SA_PUBLIC_KEY_FILE);
    let (key, key_pem) = match read_optional(&key_path)? {
        Some(pem) => (
            KeyPair::from_pem(&pem).map_err(|e| invalid(dir, SA_KEY_FILE, e))?,
            pem,
        ),
        None => {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let pem = key.serialize_pem();
            write(&key_path, &pem, 0o600)?;
            tracing::info!(key = %key_path.display(), "created service-account signing key");
            (key, pem)
        }
    };
    let public_pem = key.public_key_pem();
    if read_optional(&pub_path)?.as_deref() != Some(public_pem.as_str()) {
        write(&pub_path, &public_pem, 0o644)?;
    }
    Ok((key_pem, public_pem))
}

/// `sans` plus the defaults, deduplicated, each parsed as IP address or DNS name.
fn apiserver_sans(sans: &[String]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for san in sans
        .iter()
        .map(String::as_str)
        .chain(DEFAULT_APISERVER_SANS.iter().copied())
    {
        parse_san(san)?;
        if !out.iter().any(|s| same_san(s, san)) {
            out.push(san.to_string());
        }
    }
    Ok(out)
}

fn same_san(a: &str, b: &str) -> bool {
    match (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.eq_ignore_ascii_case(b),
    }
}

fn parse_san(san: &str) -> Result<SanType> {
    if let Ok(ip) = san.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !san.is_empty()
        && san.len() <= 253
        && san.split('.').enumerate().all(|(i, label)| {
            (i == 0 && label == "*")
                || (!label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        });
    if !valid {
        return Err(PkiError::InvalidSan(san.to_string()));
    }
    Ok(SanType::DnsName(
        san.to_string()
            .try_into()
            .map_err(|_| PkiError::InvalidSan(san.to_string()))?,
    ))
}

/// Names from `wanted` that `leaf` does not carry, as a reason string, or `None`.
fn missing_sans(leaf: &X509Certificate<'_>, wanted: &[String]) -> Option<String> {
    let mut present: Vec<String> = Vec::new();
    if let Ok(Some(ext)) = leaf.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(dns) => present.push(dns.to_string()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    present.extend(ip.map(|ip| ip.to_string()));
                }
                _ => {}
            }
        }
    }
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|w| !present.iter().any(|p| same_san(p, w)))
        .map(String::as_str)
        .collect();
    (!missing.is_empty()).then(|| format!("missing subject alternative names {missing:?}"))
}

fn subject_common_name(cert: &X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string)
}

/// The first certificate in `pem`, as DER.
pub(crate) fn pem_to_cert_der(pem: &str) -> Result<CertificateDer<'static>, String> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .ok_or_else(|| "no PEM certificate found".to_string())?
        .map_err(|e| format!("invalid PEM: {e}"))
}

fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io_err(path, source)),
    }
}

/// Writes `contents` to `path` with `mode` via a temporary file and a rename.
pub(crate) fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), std::io::Error> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    // A leftover temporary file may have looser permissions; `mode` only applies on creation.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

fn io_err(path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(dir: &Path, file: &str, reason: impl std::fmt::Display) -> PkiError {
    PkiError::Invalid {
        path: dir.join(file),
        reason: reason.to_string(),
    }
}

fn write(path: &Path, contents: &str, mode: u32) -> Result<()> {
    write_file(path, contents.as_bytes(), mode).map_err(|source| io_err(path, source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sans_as_ip_or_dns() {
        let cases: &[(&str, Option<&str>)] = &[
            ("10.0.0.1", Some("ip")),
            ("::1", Some("ip")),
            ("fd00::10", Some("ip")),
            ("localhost", Some("dns")),
            ("kubernetes.default.svc.cluster.local", Some("dns")),
            ("*.apps.example", Some("dns")),
            ("node_1.local", Some("dns")),
            ("", None),
            ("a b", None),
            ("a..b", None),
            ("foo.*", None),
            ("x:y", None),
        ];
        for (input, want) in cases {
            let got = match parse_san(input) {
                Ok(SanType::IpAddress(_)) => Some("ip"),
                Ok(SanType::DnsName(_)) => Some("dns"),
                Ok(other) => panic!("{input}: unexpected {other:?}"),
                Err(_) => None,
            };
            assert_eq!(got, *want, "{input:?}");
        }
    }

    #[test]
    fn apiserver_sans_adds_defaults_without_duplicates() {
        let sans = apiserver_sans(&[
            "LOCALHOST".into(),
            "0:0:0:0:0:0:0:1".into(),
            "10.0.0.1".into(),
        ])
        .unwrap();
        assert_eq!(sans.len(), DEFAULT_APISERVER_SANS.len() + 1);
        assert_eq!(sans[0], "LOCALHOST");
        assert!(sans.contains(&"10.0.0.1".to_string()));
    }

    #[test]
    fn placeholder_patch_requires_exactly_one_match() {
        let one = [0x30, 0x06, 0x03, 0x55, 0x04, PLACEHOLDER_BASE, 0x0c, 0x01];
        let patched = patch_placeholders(&one, 1).unwrap();
        assert_eq!(patched[5], 0x0a);
        assert_eq!(patch_placeholders(&one, 0).unwrap(), one);
        assert!(patch_placeholders(&one[..4], 1).is_err());
        let twice = [&one[..], &one[..]].concat();
        assert!(patch_placeholders(&twice, 1).is_err());
    }

    #[test]
    fn pem_encoding_round_trips() {
        let der: Vec<u8> = (0..=255).collect();
        let pem = pem_encode("CERTIFICATE", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert_eq!(pem_to_cert_der(&pem).unwrap().as_ref(), der.as_slice());
    }

    #[test]
    fn kubelet_client_cert_names_the_apiserver_in_system_masters() {
        let dir = std::env::temp_dir().join(format!("pki-kubelet-{}", std::process::id()));
        let pki = Pki::load_or_create(&dir, &[]).unwrap();
        let on_disk = fs::read_to_string(dir.join(KUBELET_CLIENT_CERT_FILE)).unwrap();
        assert_eq!(on_disk, pki.kubelet_client_cert_pem());
        let der = pem_to_cert_der(&on_disk).unwrap();
        let user = crate::tls::client_identity(&[der]).unwrap();
        assert_eq!(user.name, KUBELET_CLIENT_USER);
        assert_eq!(user.groups, vec![ADMIN_GROUP.to_string()]);
        let mode = fs::metadata(dir.join(KUBELET_CLIENT_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A second start reuses it.
        let again = Pki::load_or_create(&dir, &[]).unwrap();
        assert_eq!(
            again.kubelet_client_cert_pem(),
            pki.kubelet_client_cert_pem()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn debug_never_prints_keys() {
        let dir = std::env::temp_dir().join(format!("pki-debug-{}", std::process::id()));
        let pki = Pki::load_or_create(&dir, &[]).unwrap();
        let shown = format!("{pki:?}");
        assert!(!shown.contains("PRIVATE"), "{shown}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
