//! Service-account tokens end to end with the real kubectl: `kubectl create token` mints them
//! through `serviceaccounts/token`, the API server authenticates them (requests, SelfSubjectReview
//! through `kubectl auth whoami`, TokenReview), pod-bound tokens die with their pod, and the
//! issuer discovery documents are served to anyone.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};
use std::path::PathBuf;
use tests::{Auth, Backend, OutputExt, TestCluster};

/// A kubeconfig for `cluster`'s server and CA with no credentials of its own, so kubectl
/// authenticates only with the `--token` it is given (the admin kubeconfig's client
/// certificate would otherwise win).
fn token_kubeconfig(cluster: &TestCluster) -> PathBuf {
    let admin: Value = serde_yaml::from_str(
        &std::fs::read_to_string(&cluster.kubeconfig).expect("read admin kubeconfig"),
    )
    .expect("kubeconfig is YAML");
    let c = &admin["clusters"][0]["cluster"];
    let kc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubrs", "cluster": {
            "server": c["server"],
            "certificate-authority-data": c["certificate-authority-data"],
        }}],
        "users": [{"name": "sa", "user": {}}],
        "contexts": [{"name": "sa", "context": {"cluster": "kubrs", "user": "sa"}}],
        "current-context": "sa",
    });
    let path = cluster.dir.path().join("token.kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&kc).unwrap()).unwrap();
    path
}

/// `kubectl auth whoami -o json` with only `token` as credentials.
async fn whoami(cluster: &TestCluster, token: &str) -> std::process::Output {
    let kc = token_kubeconfig(cluster);
    cluster
        .kubectl(&[
            &format!("--kubeconfig={}", kc.display()),
            &format!("--token={token}"),
            "auth",
            "whoami",
            "-o",
            "json",
        ])
        .await
}

fn jwt_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).expect("a JWT has three parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).expect("base64url")).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_token_authenticates_as_the_service_account() {
    let c = TestCluster::start(Backend::Embedded).await.unwrap();
    // No controller-manager here: create the account its serviceaccount controller would.
    c.kubectl(&["create", "serviceaccount", "default"])
        .await
        .ok();
    let token = c.kubectl(&["create", "token", "default"]).await.ok();
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let header = jwt_part(token, 0);
    assert_eq!(header["alg"], "ES256");
    let claims = jwt_part(token, 1);
    assert_eq!(
        claims["iss"],
        "https://kubernetes.default.svc.cluster.local"
    );
    assert_eq!(claims["sub"], "system:serviceaccount:default:default");
    assert_eq!(
        claims["aud"],
        json!(["https://kubernetes.default.svc.cluster.local"])
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    assert_eq!(claims["kubernetes.io"]["namespace"], "default");
    assert_eq!(claims["kubernetes.io"]["serviceaccount"]["name"], "default");

    let me: Value = serde_json::from_str(&whoami(&c, token).await.ok()).unwrap();
    let sa_uid = c
        .kubectl(&[
            "get",
            "serviceaccount",
            "default",
            "-o",
            "jsonpath={.metadata.uid}",
        ])
        .await
        .ok();
    assert_eq!(
        me["status"]["userInfo"]["username"],
        "system:serviceaccount:default:default"
    );
    assert_eq!(me["status"]["userInfo"]["uid"], sa_uid.as_str());
    assert_eq!(
        me["status"]["userInfo"]["groups"],
        json!([
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ])
    );
    assert_eq!(
        me["status"]["userInfo"]["extra"]["authentication.kubernetes.io/credential-id"],
        json!([format!("JTI={}", claims["jti"].as_str().unwrap())])
    );

    // The token works on ordinary requests too, and a forged one does not.
    let r = c
        .raw_as(
            &Auth::Bearer(token.to_string()),
            "GET",
            "/api/v1/namespaces/default/serviceaccounts",
            None,
            "",
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let mut forged = token.to_string();
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    let r = c
        .raw_as(&Auth::Bearer(forged), "GET", "/api/v1/namespaces", None, "")
        .await;
    assert_eq!(r.status, 401, "{}", r.text());

    // TokenReview accepts it for the API's audience, and refuses it for another.
    let review = |aud: &str| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
               "spec": {"token": token, "audiences": [aud]}})
        .to_string()
    };
    let ok: Value = serde_json::from_str(
        &c.kubectl_stdin(
            &[
                "create",
                "--raw",
                "/apis/authentication.k8s.io/v1/tokenreviews",
                "-f",
                "-",
            ],
            &review("https://kubernetes.default.svc.cluster.local"),
        )
        .await
        .ok(),
    )
    .unwrap();
    assert_eq!(ok["status"]["authenticated"], true, "{ok}");
    assert_eq!(
        ok["status"]["user"]["username"],
        "system:serviceaccount:default:default"
    );
    let other: Value = serde_json::from_str(
        &c.kubectl_stdin(
            &[
                "create",
                "--raw",
                "/apis/authentication.k8s.io/v1/tokenreviews",
                "-f",
                "-",
            ],
            &review("vault"),
        )
        .await
        .ok(),
    )
    .unwrap();
    assert_ne!(other["status"]["authenticated"], true, "{other}");
    assert!(
        other["status"]["error"]
            .as_str()
            .unwrap()
            .contains("token audiences [\"https://kubernetes.default.svc.cluster.local\"] is invalid for the target audiences [\"vault\"]"),
        "{other}"
    );

    // Audiences and durations of the caller's choosing.
    let t = c
        .kubectl(&[
            "create",
            "token",
            "default",
            "--audience=vault",
            "--duration=2h",
        ])
        .await
        .ok();
    let claims = jwt_part(t.trim(), 1);
    assert_eq!(claims["aud"], json!(["vault"]));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        7200
    );
    // Not for the API, so not accepted by it.
    assert!(!whoami(&c, t.trim()).await.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_bound_token_stops_working_when_the_pod_is_deleted() {
    let c = TestCluster::start(Backend::Embedded).await.unwrap();
    c.kubectl(&["create", "serviceaccount", "default"])
        .await
        .ok();
    c.kubectl(&["run", "p", "--image=registry.k8s.io/pause:3.10"])
        .await
        .ok();
    let uid = c
        .kubectl(&["get", "pod", "p", "-o", "jsonpath={.metadata.uid}"])
        .await
        .ok();
    let token = c
        .kubectl(&[
            "create",
            "token",
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "p",
            "--bound-object-uid",
            &uid,
        ])
        .await
        .ok();
    let token = token.trim();
    assert_eq!(
        jwt_part(token, 1)["kubernetes.io"]["pod"],
        json!({"name": "p", "uid": uid})
    );
    let me: Value = serde_json::from_str(&whoami(&c, token).await.ok()).unwrap();
    let extra = &me["status"]["userInfo"]["extra"];
    assert_eq!(extra["authentication.kubernetes.io/pod-name"], json!(["p"]));
    assert_eq!(extra["authentication.kubernetes.io/pod-uid"], json!([uid]));

    // A stale uid is a conflict, as upstream words it.
    let err = c
        .kubectl(&[
            "create",
            "token",
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "p",
            "--bound-object-uid",
            "00000000-0000-0000-0000-000000000000",
        ])
        .await
        .fails();
    assert!(
        err.contains("Operation cannot be fulfilled on Pod \"p\": the UID in the bound object reference (00000000-0000-0000-0000-000000000000) does not match the UID in record"),
        "{err}"
    );

    c.kubectl(&["delete", "pod", "p"]).await.ok();
    let err = whoami(&c, token).await.fails();
    assert!(err.contains("Unauthorized"), "{err}");
    // Recreating a pod with the same name does not revive the token.
    c.kubectl(&["run", "p", "--image=registry.k8s.io/pause:3.10"])
        .await
        .ok();
    let err = whoami(&c, token).await.fails();
    assert!(err.contains("Unauthorized"), "{err}");

    // Binding to a pod that does not exist.
    let err = c
        .kubectl(&[
            "create",
            "token",
            "default",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "gone",
        ])
        .await
        .fails();
    assert!(err.contains("pods \"gone\" not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_requests_are_validated_as_upstream() {
    let c = TestCluster::start(Backend::Embedded).await.unwrap();
    c.kubectl(&["create", "serviceaccount", "default"])
        .await
        .ok();
    let err = c
        .kubectl(&["create", "token", "default", "--duration=1m"])
        .await
        .fails();
    assert!(
        err.contains("TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes"),
        "{err}"
    );
    let err = c.kubectl(&["create", "token", "nobody"]).await.fails();
    assert!(
        err.contains("serviceaccounts \"nobody\" not found"),
        "{err}"
    );
    let r = c
        .raw(
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/nobody/token",
            Some("application/json"),
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}"#,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["reason"], "NotFound");
    let r = c
        .raw(
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/default/token",
            Some("application/json"),
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":599}}"#,
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    let r = c
        .raw(
            "POST",
            "/api/v1/namespaces/default/serviceaccounts/default/token",
            Some("application/json"),
            r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{}}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let tr = r.json();
    assert_eq!(tr["kind"], "TokenRequest");
    assert_eq!(tr["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(tr["metadata"]["name"], "default");
    assert_eq!(tr["spec"]["expirationSeconds"], 3600);
    assert!(tr["status"]["expirationTimestamp"].is_string());

    // Discovery lists the subresource as upstream does.
    let d: Value =
        serde_json::from_str(&c.kubectl(&["get", "--raw", "/api/v1"]).await.ok()).unwrap();
    let sub = d["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "serviceaccounts/token")
        .expect("serviceaccounts/token in discovery");
    assert_eq!(sub["verbs"], json!(["create"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_discovery_serves_the_signing_key() {
    let c = TestCluster::start(Backend::Embedded).await.unwrap();
    let jwks: Value =
        serde_json::from_str(&c.kubectl(&["get", "--raw", "/openid/v1/jwks"]).await.ok()).unwrap();
    let key = &jwks["keys"][0];
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    assert_eq!(key["alg"], "ES256");
    assert_eq!(key["use"], "sig");
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(key["x"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    // Tokens name this key.
    c.kubectl(&["create", "serviceaccount", "default"])
        .await
        .ok();
    let token = c.kubectl(&["create", "token", "default"]).await.ok();
    assert_eq!(jwt_part(token.trim(), 0)["kid"], key["kid"]);

    // Relying parties fetch both documents without credentials.
    let cfg = c
        .raw_as(
            &Auth::Anonymous,
            "GET",
            "/.well-known/openid-configuration",
            None,
            "",
        )
        .await;
    assert_eq!(cfg.status, 200, "{}", cfg.text());
    let cfg = cfg.json();
    assert_eq!(
        cfg["issuer"],
        "https://kubernetes.default.svc.cluster.local"
    );
    assert_eq!(
        cfg["jwks_uri"],
        format!("https://{}/openid/v1/jwks", c.addr)
    );
    assert_eq!(
        cfg["id_token_signing_alg_values_supported"],
        json!(["ES256"])
    );
    let anon = c
        .raw_as(&Auth::Anonymous, "GET", "/openid/v1/jwks", None, "")
        .await;
    assert_eq!(anon.status, 200);
    assert_eq!(
        anon.header_all("content-type"),
        ["application/jwk-set+json"]
    );
    assert_eq!(anon.json(), jwks);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_and_audiences_come_from_flags() {
    let c = TestCluster::start_with(
        Backend::Embedded,
        tests::StartOptions {
            extra_args: vec![
                "--service-account-issuer=https://issuer.example.com".into(),
                "--api-audiences=api,https://issuer.example.com".into(),
            ],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    c.kubectl(&["create", "serviceaccount", "default"])
        .await
        .ok();
    let token = c.kubectl(&["create", "token", "default"]).await.ok();
    let claims = jwt_part(token.trim(), 1);
    assert_eq!(claims["iss"], "https://issuer.example.com");
    assert_eq!(claims["aud"], json!(["api", "https://issuer.example.com"]));
    let me: Value = serde_json::from_str(&whoami(&c, token.trim()).await.ok()).unwrap();
    assert_eq!(
        me["status"]["userInfo"]["username"],
        "system:serviceaccount:default:default"
    );
    let cfg: Value = serde_json::from_str(
        &c.kubectl(&["get", "--raw", "/.well-known/openid-configuration"])
            .await
            .ok(),
    )
    .unwrap();
    assert_eq!(cfg["issuer"], "https://issuer.example.com");
}
