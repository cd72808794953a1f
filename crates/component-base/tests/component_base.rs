//! Public-API tests: PKI creation and reuse, TLS handshakes with and without client
//! certificates, kubeconfig shape, token file parsing.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use component_base::kubeconfig::{kubeconfig_yaml, write_kubeconfig, KubeconfigAuth};
use component_base::pki::{self, Pki, PkiError};
use component_base::tls::{client_config, client_identity, server_config};
use component_base::tokenfile::{parse_token_file, TokenFileError};
use component_base::UserInfo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};
use x509_parser::extensions::GeneralName;

const ALL_FILES: &[&str] = &[
    "ca.crt",
    "ca.key",
    "apiserver.crt",
    "apiserver.key",
    "admin.crt",
    "admin.key",
    "sa.key",
    "sa.pub",
];

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn der(pem: &str) -> CertificateDer<'static> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .unwrap()
        .unwrap()
}

/// (DNS names, IP addresses as strings) of a PEM certificate.
fn sans_of(pem: &str) -> Vec<String> {
    let der = der(pem);
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let ext = cert.subject_alternative_name().unwrap().unwrap();
    ext.value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => d.to_string(),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                std::net::IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()).to_string()
            }
            GeneralName::IPAddress(b) => {
                std::net::IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()).to_string()
            }
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn first_start_creates_every_file_with_private_keys_0600() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let pki = Pki::load_or_create(&pki_dir, &["10.96.0.1".into()]).unwrap();

    for file in ALL_FILES {
        let path = pki_dir.join(file);
        let want = if file.ends_with(".key") { 0o600 } else { 0o644 };
        assert_eq!(mode(&path), want, "{file}");
    }
    assert_eq!(mode(&pki_dir), 0o700);
    assert_eq!(
        std::fs::read_to_string(pki_dir.join("ca.crt")).unwrap(),
        pki.ca_cert_pem()
    );
    assert_eq!(
        std::fs::read_to_string(pki_dir.join("sa.key")).unwrap(),
        pki.service_account_key_pem()
    );
    assert!(pki.service_account_public_key_pem().contains("PUBLIC KEY"));
    assert!(pki.ca_key_pem().contains("PRIVATE KEY"));

    let ca_der = der(pki.ca_cert_pem());
    let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
    assert!(ca.is_ca());
    assert_eq!(
        ca.subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap(),
        "kubernetes-ca"
    );
    let ca_days =
        (ca.validity().not_after.timestamp() - ca.validity().not_before.timestamp()) / 86_400;
    assert!(ca_days >= 3650, "CA valid for {ca_days} days");

    let sans = sans_of(pki.apiserver_cert_pem());
    for want in ["10.96.0.1"]
        .iter()
        .chain(pki::DEFAULT_APISERVER_SANS.iter())
    {
        assert!(
            sans.iter().any(|s| s == want),
            "{want} missing from {sans:?}"
        );
    }
    let admin = client_identity(&[der(pki.admin_cert_pem())]).unwrap();
    assert_eq!(admin.name, "kubernetes-admin");
    assert_eq!(admin.groups, ["system:masters"]);
}

#[test]
fn later_starts_reuse_existing_material() {
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::load_or_create(dir.path(), &["api.example.test".into()]).unwrap();
    let second = Pki::load_or_create(dir.path(), &["api.example.test".into()]).unwrap();
    assert_eq!(first.ca_cert_pem(), second.ca_cert_pem());
    assert_eq!(first.ca_key_pem(), second.ca_key_pem());
    assert_eq!(first.apiserver_cert_pem(), second.apiserver_cert_pem());
    assert_eq!(first.apiserver_key_pem(), second.apiserver_key_pem());
    assert_eq!(first.admin_cert_pem(), second.admin_cert_pem());
    assert_eq!(first.admin_key_pem(), second.admin_key_pem());
    assert_eq!(
        first.service_account_key_pem(),
        second.service_account_key_pem()
    );
    // A subset of the SANs already present is satisfied by the existing certificate too.
    let third = Pki::load_or_create(dir.path(), &[]).unwrap();
    assert_eq!(first.apiserver_cert_pem(), third.apiserver_cert_pem());
}

#[test]
fn missing_san_reissues_serving_cert_from_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let first = Pki::load_or_create(dir.path(), &[]).unwrap();
    let sans = vec!["192.168.50.7".to_string(), "API.Example.Test".to_string()];
    let second = Pki::load_or_create(dir.path(), &sans).unwrap();

    assert_eq!(first.ca_cert_pem(), second.ca_cert_pem());
    assert_eq!(first.admin_cert_pem(), second.admin_cert_pem());
    assert_ne!(first.apiserver_cert_pem(), second.apiserver_cert_pem());
    assert_ne!(first.apiserver_key_pem(), second.apiserver_key_pem());
    let got = sans_of(second.apiserver_cert_pem());
    assert!(got.contains(&"192.168.50.7".to_string()), "{got:?}");
    assert!(got
        .iter()
        .any(|s| s.eq_ignore_ascii_case("api.example.test")));
    assert!(got.contains(&"kubernetes.default.svc".to_string()));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("apiserver.crt")).unwrap(),
        second.apiserver_cert_pem()
    );
    // The reissued certificate is served and verifies for the new name.
    handshake(
        server_config(&second).unwrap(),
        client_config(second.ca_cert_pem(), None).unwrap(),
        "192.168.50.7",
    )
    .unwrap();
}

#[test]
fn leaf_signed_by_another_ca_is_reissued() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
    Pki::load_or_create(other.path(), &[]).unwrap();
    for file in ["apiserver.crt", "apiserver.key"] {
        std::fs::copy(other.path().join(file), dir.path().join(file)).unwrap();
    }
    let reloaded = Pki::load_or_create(dir.path(), &[]).unwrap();
    assert_eq!(pki.ca_cert_pem(), reloaded.ca_cert_pem());
    assert_ne!(
        std::fs::read_to_string(other.path().join("apiserver.crt")).unwrap(),
        reloaded.apiserver_cert_pem()
    );
    handshake(
        server_config(&reloaded).unwrap(),
        client_config(reloaded.ca_cert_pem(), None).unwrap(),
        "localhost",
    )
    .unwrap();
}

#[test]
fn new_ca_reissues_every_leaf_but_keeps_service_account_key() {
    let dir = tempfile::tempdir().unwrap();
    let old = Pki::load_or_create(dir.path(), &[]).unwrap();
    std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
    std::fs::remove_file(dir.path().join("ca.key")).unwrap();
    let new = Pki::load_or_create(dir.path(), &[]).unwrap();
    assert_ne!(old.ca_cert_pem(), new.ca_cert_pem());
    assert_ne!(old.apiserver_cert_pem(), new.apiserver_cert_pem());
    assert_ne!(old.admin_cert_pem(), new.admin_cert_pem());
    assert_eq!(old.service_account_key_pem(), new.service_account_key_pem());
    handshake(
        server_config(&new).unwrap(),
        client_config(
            new.ca_cert_pem(),
            Some((new.admin_cert_pem(), new.admin_key_pem())),
        )
        .unwrap(),
        "localhost",
    )
    .unwrap();
}

#[test]
fn half_present_ca_is_an_error_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    Pki::load_or_create(dir.path(), &[]).unwrap();
    std::fs::remove_file(dir.path().join("ca.key")).unwrap();
    let err = Pki::load_or_create(dir.path(), &[]).unwrap_err();
    assert!(
        matches!(&err, PkiError::Invalid { path, .. } if path.ends_with("ca.key")),
        "{err}"
    );
    assert!(!dir.path().join("ca.key").exists());
}

#[test]
fn invalid_san_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for bad in ["", "bad name", "a..b", "-\u{e9}.example"] {
        let err = Pki::load_or_create(dir.path(), &[bad.to_string()]).unwrap_err();
        assert!(
            matches!(&err, PkiError::InvalidSan(s) if s == bad),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn issued_client_cert_carries_user_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("system:kube-scheduler", &[]),
        ("system:node:n1", &["system:nodes"]),
        ("jane", &["dev", "ops", "system:authenticated"]),
    ];
    for (cn, groups) in cases {
        let (cert, key) = pki.issue_client_cert(cn, groups).unwrap();
        assert!(key.contains("PRIVATE KEY"));
        let want = UserInfo {
            name: cn.to_string(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        assert_eq!(client_identity(&[der(&cert)]), Some(want.clone()), "{cn}");

        // The server verifies the chain (including the signature over the patched subject)
        // and sees the same identity.
        let (server, _) = handshake(
            server_config(&pki).unwrap(),
            client_config(pki.ca_cert_pem(), Some((&cert, &key))).unwrap(),
            "localhost",
        )
        .unwrap();
        let presented = server.peer_certificates().expect("client certificate");
        assert_eq!(client_identity(presented), Some(want), "{cn}");
    }
    let too_many: Vec<String> = (0..=pki::MAX_CERT_GROUPS)
        .map(|i| format!("g{i}"))
        .collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    assert!(matches!(
        pki.issue_client_cert("u", &too_many),
        Err(PkiError::InvalidSubject(_))
    ));
    let max: Vec<&str> = too_many[..pki::MAX_CERT_GROUPS].to_vec();
    let (cert, _) = pki.issue_client_cert("u", &max).unwrap();
    assert_eq!(client_identity(&[der(&cert)]).unwrap().groups, max);
}

#[test]
fn anonymous_clients_connect_and_negotiate_h2() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &["10.0.0.1".into()]).unwrap();
    for name in [
        "localhost",
        "127.0.0.1",
        "::1",
        "kubernetes.default.svc",
        "10.0.0.1",
    ] {
        let mut client = (*client_config(pki.ca_cert_pem(), None).unwrap()).clone();
        client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let (server, client) =
            handshake(server_config(&pki).unwrap(), Arc::new(client), name).unwrap();
        assert!(server.peer_certificates().is_none(), "{name}");
        assert_eq!(client.alpn_protocol(), Some(&b"h2"[..]), "{name}");
    }
}

#[test]
fn server_name_outside_sans_is_rejected_by_client() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
    let err = handshake(
        server_config(&pki).unwrap(),
        client_config(pki.ca_cert_pem(), None).unwrap(),
        "not-in-cert.example",
    )
    .unwrap_err();
    assert!(matches!(err, rustls::Error::InvalidCertificate(_)), "{err}");
}

#[test]
fn client_cert_from_foreign_ca_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
    let foreign = Pki::load_or_create(other.path(), &[]).unwrap();
    let (cert, key) = foreign
        .issue_client_cert("mallory", &["system:masters"])
        .unwrap();
    let err = handshake(
        server_config(&pki).unwrap(),
        client_config(pki.ca_cert_pem(), Some((&cert, &key))).unwrap(),
        "localhost",
    )
    .unwrap_err();
    assert!(matches!(err, rustls::Error::InvalidCertificate(_)), "{err}");
}

#[test]
fn serving_cert_is_not_accepted_as_client_cert() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(dir.path(), &[]).unwrap();
    let (cert, key) = pki
        .issue_serving_cert("kubelet", &["node1".into(), "10.1.2.3".into()])
        .unwrap();
    assert_eq!(sans_of(&cert), ["node1", "10.1.2.3"]);
    let err = handshake(
        server_config(&pki).unwrap(),
        client_config(pki.ca_cert_pem(), Some((&cert, &key))).unwrap(),
        "localhost",
    )
    .unwrap_err();
    assert!(matches!(err, rustls::Error::InvalidCertificate(_)), "{err}");
}

#[test]
fn client_identity_without_certificate_is_none() {
    assert_eq!(client_identity(&[]), None);
    assert_eq!(
        client_identity(&[CertificateDer::from(vec![1, 2, 3])]),
        None
    );
}

/// Runs an in-memory TLS handshake; the first error either side reports wins.
fn handshake(
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    name: &str,
) -> Result<(ServerConnection, ClientConnection), rustls::Error> {
    let mut client =
        ClientConnection::new(client, ServerName::try_from(name.to_string()).unwrap())?;
    let mut server = ServerConnection::new(server)?;
    for _ in 0..20 {
        let mut buf = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server.process_new_packets()?;
        }
        let mut buf = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut buf).unwrap();
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets()?;
        }
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() {
            return Ok((server, client));
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn kubeconfig_has_standard_shape_and_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/admin.conf");
    let auth = KubeconfigAuth::ClientCert {
        cert_pem: "CERT PEM".into(),
        key_pem: "KEY PEM".into(),
    };
    write_kubeconfig(
        &path,
        "kubernetes",
        "https://127.0.0.1:6443",
        "CA PEM",
        auth,
        Some("kube-system"),
    )
    .unwrap();
    assert_eq!(mode(&path), 0o600);

    let doc: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let b64 = |v: &serde_yaml::Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(doc["apiVersion"], "v1");
    assert_eq!(doc["kind"], "Config");
    assert_eq!(doc["current-context"], "kubernetes");
    let cluster = &doc["clusters"][0];
    assert_eq!(cluster["name"], "kubernetes");
    assert_eq!(cluster["cluster"]["server"], "https://127.0.0.1:6443");
    assert_eq!(
        b64(&cluster["cluster"]["certificate-authority-data"]),
        "CA PEM"
    );
    let user = &doc["users"][0];
    assert_eq!(user["name"], "kubernetes");
    assert_eq!(b64(&user["user"]["client-certificate-data"]), "CERT PEM");
    assert_eq!(b64(&user["user"]["client-key-data"]), "KEY PEM");
    assert!(user["user"].get("token").is_none());
    let context = &doc["contexts"][0];
    assert_eq!(context["name"], "kubernetes");
    assert_eq!(context["context"]["cluster"], "kubernetes");
    assert_eq!(context["context"]["user"], "kubernetes");
    assert_eq!(context["context"]["namespace"], "kube-system");
}

#[test]
fn token_kubeconfig_omits_cert_fields_and_namespace() {
    let yaml = kubeconfig_yaml(
        "c",
        "https://10.0.0.1:6443",
        "CA",
        &KubeconfigAuth::Token("abc.def".into()),
        None,
    )
    .unwrap();
    let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(doc["users"][0]["user"]["token"], "abc.def");
    assert!(doc["users"][0]["user"]
        .get("client-certificate-data")
        .is_none());
    assert!(doc["contexts"][0]["context"].get("namespace").is_none());
}

/// kubectl is the real consumer; it is on every machine this project builds on.
#[test]
fn kubectl_accepts_written_kubeconfig() {
    let kubectl = Path::new("/usr/bin/kubectl");
    if !kubectl.exists() {
        eprintln!("kubectl not installed; shape is covered by kubeconfig_has_standard_shape");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::load_or_create(&dir.path().join("pki"), &[]).unwrap();
    let path = dir.path().join("admin.conf");
    write_kubeconfig(
        &path,
        "test-cluster",
        "https://127.0.0.1:6443",
        pki.ca_cert_pem(),
        KubeconfigAuth::ClientCert {
            cert_pem: pki.admin_cert_pem().into(),
            key_pem: pki.admin_key_pem().into(),
        },
        Some("default"),
    )
    .unwrap();
    let out = std::process::Command::new(kubectl)
        .args([
            "config",
            "view",
            "--raw",
            "--minify",
            "-o",
            "json",
            "--kubeconfig",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
    assert_eq!(view["current-context"], "test-cluster");
    assert_eq!(
        view["clusters"][0]["cluster"]["server"],
        "https://127.0.0.1:6443"
    );
    let key_b64 = view["users"][0]["user"]["client-key-data"]
        .as_str()
        .unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_b64)
        .unwrap();
    assert_eq!(key, pki.admin_key_pem().as_bytes());
}

#[test]
fn token_file_parses_upstream_format() {
    let contents = "\
# static tokens
abc123,alice,1001,\"system:masters,dev\"

def456, bob ,1002
 \"ghi,789\",carol,1003,\"ops\",ignored-extra
jkl,dave,1004,\"\"
";
    let tokens = parse_token_file(contents).unwrap();
    assert_eq!(tokens.len(), 4);
    assert_eq!(
        tokens["abc123"],
        UserInfo {
            name: "alice".into(),
            uid: "1001".into(),
            groups: vec!["system:masters".into(), "dev".into()],
        }
    );
    // Go's csv TrimLeadingSpace keeps trailing spaces; so do we.
    assert_eq!(tokens["def456"].name, "bob ");
    assert!(tokens["def456"].groups.is_empty());
    assert_eq!(tokens["ghi,789"].groups, ["ops"]);
    assert!(tokens["jkl"].groups.is_empty());
}

#[test]
fn token_file_later_duplicate_wins_and_empty_token_is_skipped() {
    let tokens = parse_token_file("t,first,1\n,nobody,2\nt,second,3\n").unwrap();
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens["t"].name, "second");
}

#[test]
fn token_file_errors_name_the_line() {
    let cases = [
        ("# header\nonly,two\n", 2, "at least 3 columns"),
        ("a,b,c\n\nx,y,\"unterminated\n", 3, "unterminated"),
        ("a,b\"c,d\n", 1, "bare quote"),
    ];
    for (contents, want_line, want_reason) in cases {
        let err = parse_token_file(contents).unwrap_err();
        match &err {
            TokenFileError::Parse { line, reason } => {
                assert_eq!(*line, want_line, "{contents:?}");
                assert!(reason.contains(want_reason), "{reason}");
            }
            other => panic!("unexpected error {other}"),
        }
        assert!(err.to_string().contains(&format!("line {want_line}")));
    }
}

#[test]
fn token_file_io_error_names_the_path() {
    let err = component_base::tokenfile::load_token_file(Path::new("/nonexistent/tokens.csv"))
        .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/tokens.csv"), "{err}");
}
