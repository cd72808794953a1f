//! rustls configurations for the cluster's HTTPS endpoints and clients, and the x509
//! authenticator that turns a verified client certificate into a [`UserInfo`].
//!
//! Every configuration uses the `ring` provider explicitly, so nothing depends on a process-wide
//! default provider being installed. Servers *request* client certificates but do not require
//! them: a presented certificate must chain to the cluster CA or the handshake fails, while a
//! client without one still connects and authenticates another way (bearer token) or stays
//! anonymous — the same contract as upstream's `--client-ca-file`.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::pki::Pki;
pub use crate::UserInfo;

/// ALPN protocols offered by [`server_config`], in preference order.
pub const ALPN_PROTOCOLS: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Errors building a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM input held no usable certificate or key.
    #[error("{what}: {reason}")]
    Pem {
        /// Which input was wrong (`CA certificate`, `client key`, ...).
        what: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// rustls rejected the configuration (e.g. a key that does not match its certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The certificate verifier could not be built from the CA.
    #[error("certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

type Result<T, E = TlsError> = std::result::Result<T, E>;

/// The API server's TLS configuration: serves the PKI's API server certificate, offers ALPN
/// `h2` and `http/1.1`, and verifies optional client certificates against the cluster CA.
///
/// Read the verified chain with `ServerConnection::peer_certificates` and pass it to
/// [`client_identity`].
pub fn server_config(pki: &Pki) -> Result<Arc<ServerConfig>> {
    server_config_from_pem(
        pki.ca_cert_pem(),
        pki.apiserver_cert_pem(),
        pki.apiserver_key_pem(),
    )
}

/// Like [`server_config`] for any serving certificate (e.g. a kubelet's), with optional client
/// certificates verified against the CA(s) in `client_ca_pem`.
pub fn server_config_from_pem(
    client_ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<Arc<ServerConfig>> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(
        Arc::new(root_store(client_ca_pem)?),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            parse_certs(cert_pem, "serving certificate")?,
            parse_key(key_pem, "serving key")?,
        )?;
    config.alpn_protocols = ALPN_PROTOCOLS.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration trusting only the CA(s) in `ca_pem`, optionally presenting the client
/// certificate `(cert_pem, key_pem)`.
///
/// No ALPN protocols are set: the HTTP client in use decides (clone the config to add them).
pub fn client_config(ca_pem: &str, identity: Option<(&str, &str)>) -> Result<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(ca_pem)?);
    let config = match identity {
        Some((cert_pem, key_pem)) => builder.with_client_auth_cert(
            parse_certs(cert_pem, "client certificate")?,
            parse_key(key_pem, "client key")?,
        )?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The user a verified client certificate chain authenticates, as upstream's x509
/// authenticator maps it: the leaf's subject CN is the user name, each subject O is a group,
/// and the uid is empty.
///
/// Returns `None` when there is no certificate, it cannot be parsed, or its CN is empty. The
/// chain must already have been verified (rustls does that during the handshake); this only
/// reads it.
pub fn client_identity(certs: &[CertificateDer<'_>]) -> Option<UserInfo> {
    let (_, leaf) = x509_parser::parse_x509_certificate(certs.first()?).ok()?;
    let subject = leaf.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    if name.is_empty() {
        return None;
    }
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok())
        .map(str::to_string)
        .collect();
    Some(UserInfo {
        name,
        uid: String::new(),
        groups,
    })
}

/// All certificates in `pem`, in order. Errors if there are none.
pub fn parse_certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>> {
    let certs = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_err(what, e))?;
    if certs.is_empty() {
        return Err(pem_err(what, "no PEM certificate found"));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in `pem`.
pub fn parse_key(pem: &str, what: &'static str) -> Result<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|e| pem_err(what, e))?
        .ok_or_else(|| pem_err(what, "no PEM private key found"))
}

fn root_store(ca_pem: &str) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(ca_pem, "CA certificate")? {
        roots.add(cert).map_err(|e| pem_err("CA certificate", e))?;
    }
    Ok(roots)
}

/// ring's provider with the cipher suites in Go's `crypto/tls` preference order, which is what
/// kubectl and every upstream component offer: AES-128-GCM first where the CPU has AES
/// instructions, ChaCha20-Poly1305 first where it has none (a Raspberry Pi 4), AES-256-GCM last
/// (rustls's default puts it first: ~30% more CPU per byte than AES-128 on x86, several times
/// ChaCha20's without AES instructions). Servers follow the client's order, so this decides
/// the cipher of every connection between our components.
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    let aes_hw = has_aes_instructions();
    p.cipher_suites.sort_by_key(|s| suite_rank(s, aes_hw));
    Arc::new(p)
}

/// Sort key of a suite: TLS 1.3 before 1.2, then the bulk cipher as Go ranks it.
fn suite_rank(s: &rustls::SupportedCipherSuite, aes_hw: bool) -> (bool, u8) {
    let name = format!("{:?}", s.suite());
    let cipher = if name.contains("AES_128") {
        if aes_hw {
            0
        } else {
            1
        }
    } else if name.contains("CHACHA20") {
        if aes_hw {
            1
        } else {
            0
        }
    } else {
        2
    };
    (s.version() != &rustls::version::TLS13, cipher)
}

fn has_aes_instructions() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

fn pem_err(what: &'static str, reason: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        what,
        reason: reason.to_string(),
    }
}

/// Accepts any server certificate (Go's `InsecureSkipVerify`), for peers whose serving
/// certificate is self-signed unless a CA is configured (kubelets, probe targets). Handshake
/// signatures are still checked against the presented key with `provider`'s algorithms.
#[derive(Debug)]
pub struct SkipServerVerification(pub Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for SkipServerVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cipher_suites_in_gos_order() {
        let names = |aes_hw: bool| {
            let mut v = rustls::crypto::ring::default_provider().cipher_suites;
            v.sort_by_key(|s| suite_rank(s, aes_hw));
            v.iter()
                .map(|s| format!("{:?}", s.suite()))
                .collect::<Vec<_>>()
        };
        let hw = names(true);
        assert_eq!(
            &hw[..3],
            [
                "TLS13_AES_128_GCM_SHA256",
                "TLS13_CHACHA20_POLY1305_SHA256",
                "TLS13_AES_256_GCM_SHA384"
            ]
        );
        let soft = names(false);
        assert_eq!(soft[0], "TLS13_CHACHA20_POLY1305_SHA256");
        assert!(
            soft[3..].iter().all(|n| !n.starts_with("TLS13")),
            "{soft:?}"
        );
    }
}
