//! Each test-environment handle proven against its real server.

#![allow(clippy::unwrap_used, missing_docs)]

use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_secretsmanager::config::Credentials;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;
use sidekey_testenv::{KubeApi, Moto, OpenBao, Postgres, TcpProxy};

fn https_client() -> aws_sdk_secretsmanager::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

async fn aws_config(moto: &Moto, creds: Credentials) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(https_client())
        .endpoint_url(&moto.endpoint)
        .region(Region::new(moto.region.clone()))
        .credentials_provider(creds)
        .load()
        .await
}

#[test]
fn openbao_kv_v2_write_and_read_with_audit_counts() {
    let bao = OpenBao::start();
    assert_eq!(bao.kv_put("app/db", json!({"password": "s3cr3t-v1"})), 1);
    assert_eq!(bao.kv_put("app/db", json!({"password": "s3cr3t-v2"})), 2);
    assert_eq!(bao.kv_get("app/db"), json!({"password": "s3cr3t-v2"}));
    assert_eq!(bao.count_requests(|p| p == "secret/data/app/db"), 3);
    let missing = bao.api("GET", "secret/data/nope", None).unwrap_err();
    assert!(missing.contains("404"), "{missing}");
}

#[test]
fn openbao_leases_postgres_credentials_that_log_in() {
    let pg = Postgres::start();
    // Wrong passwords are refused: the server really checks credentials.
    assert!(pg.psql("postgres", "wrong", "select 1").is_err());
    let bao = OpenBao::start();
    bao.enable_postgres(&pg, "app", 10, 30);
    let creds = bao.api("GET", "database/creds/app", None).unwrap();
    let (user, password) = (creds["data"]["username"].as_str().unwrap(), creds["data"]["password"].as_str().unwrap());
    assert_eq!(creds["lease_duration"], 10);
    assert!(creds["lease_id"].as_str().unwrap().starts_with("database/creds/app/"));
    assert_eq!(pg.psql(user, password, "select current_user").unwrap(), user);
    // Revoking the lease drops the user.
    bao.api("POST", "sys/leases/revoke", Some(json!({"lease_id": creds["lease_id"]}))).unwrap();
    assert!(pg.psql(user, password, "select 1").is_err());
}

#[tokio::test(flavor = "current_thread")]
async fn moto_secret_created_and_read_with_the_rust_aws_sdk() {
    let moto = Moto::start();
    let config = aws_config(&moto, Credentials::new("testing", "testing", None, None, "static")).await;
    let sm = aws_sdk_secretsmanager::Client::new(&config);
    sm.create_secret().name("prod/db").secret_string(r#"{"password":"p1"}"#).send().await.unwrap();
    let v2 = moto.put_secret_value("prod/db", r#"{"password":"p2"}"#);
    let got = sm.get_secret_value().secret_id("prod/db").send().await.unwrap();
    assert_eq!(got.secret_string(), Some(r#"{"password":"p2"}"#));
    assert_eq!(got.version_id(), Some(v2.as_str()));
    let described = sm.describe_secret().secret_id("prod/db").send().await.unwrap();
    let stages = described.version_ids_to_stages().unwrap();
    assert_eq!(stages[&v2], vec!["AWSCURRENT".to_owned()]);
    let counts = moto.request_counts();
    assert_eq!(counts.get("CreateSecret"), Some(&1));
    assert_eq!(counts.get("PutSecretValue"), Some(&1));
    assert_eq!(counts.get("GetSecretValue"), Some(&1));
    assert_eq!(counts.get("DescribeSecret"), Some(&1));
}

#[tokio::test(flavor = "current_thread")]
async fn moto_sts_assumes_a_web_identity_role() {
    let moto = Moto::start();
    let role = moto.create_web_identity_role("app-reader");
    moto.create_secret("team/api", "token-value");
    let base = aws_config(&moto, Credentials::new("none", "none", None, None, "unused")).await;
    let sts = aws_sdk_sts::Client::new(&base);
    let assumed = sts
        .assume_role_with_web_identity()
        .role_arn(&role)
        .role_session_name("sidekey-test")
        .web_identity_token("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YXBwOmFwcCJ9.c2ln")
        .send()
        .await
        .unwrap();
    let c = assumed.credentials().unwrap();
    assert!(c.access_key_id().starts_with("ASIA"), "temporary credentials: {}", c.access_key_id());
    assert!(assumed.assumed_role_user().unwrap().arn().contains("app-reader"));
    let config = aws_config(
        &moto,
        Credentials::new(c.access_key_id(), c.secret_access_key(), Some(c.session_token().to_owned()), None, "sts"),
    )
    .await;
    let got =
        aws_sdk_secretsmanager::Client::new(&config).get_secret_value().secret_id("team/api").send().await.unwrap();
    assert_eq!(got.secret_string(), Some("token-value"));
    assert_eq!(moto.request_counts().get("AssumeRoleWithWebIdentity"), Some(&1));
}

const RESTRICTED_POD: &str = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ok"},
  "spec": {"serviceAccountName": "app",
    "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "c", "image": "registry.example/app:1",
      "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}}"#;

#[tokio::test(flavor = "current_thread")]
async fn kube_api_stores_namespaces_and_pods_from_kube_rs_and_kubectl() {
    let kube = KubeApi::start();
    let client = kube.client().await;
    let ns =
        Namespace { metadata: ObjectMeta { name: Some("team-a".into()), ..Default::default() }, ..Default::default() };
    Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
    kube.create_service_account("team-a", "app");
    let pod: Pod = serde_json::from_str(RESTRICTED_POD).unwrap();
    let pods = Api::<Pod>::namespaced(client, "team-a");
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let out =
        kube.kubectl_stdin(&["-n", "team-a", "apply", "-f", "-"], &RESTRICTED_POD.replace("\"ok\"", "\"via-kubectl\""));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let names: Vec<String> =
        pods.list(&Default::default()).await.unwrap().items.into_iter().filter_map(|p| p.metadata.name).collect();
    assert_eq!(names, ["ok", "via-kubectl"]);
}

#[test]
fn kube_api_enforces_pod_security_restricted() {
    let kube = KubeApi::start();
    kube.create_namespace("locked", &["pod-security.kubernetes.io/enforce=restricted"]);
    kube.create_service_account("locked", "app");
    let ok = kube.kubectl_stdin(&["-n", "locked", "create", "-f", "-"], RESTRICTED_POD);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let root = RESTRICTED_POD.replace("\"ok\"", "\"root\"").replace("\"runAsUser\": 1000", "\"runAsUser\": 0");
    let refused = kube.kubectl_stdin(&["-n", "locked", "create", "-f", "-"], &root);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("violates PodSecurity \"restricted") && err.contains("runAsUser=0"), "{err}");
}

#[test]
fn openbao_kubernetes_auth_with_a_token_request_token() {
    let kube = KubeApi::start();
    kube.create_namespace("payments", &[]);
    kube.create_service_account("payments", "billing");
    kube.create_service_account("payments", "intruder");
    let bao = OpenBao::start();
    bao.put_policy("billing", r#"path "secret/data/payments/*" { capabilities = ["read"] }"#);
    bao.kv_put("payments/stripe", json!({"api_key": "sk_test_123"}));
    bao.enable_kubernetes_auth(&kube, "billing", "payments", "billing", "sidekey", &["billing"]);

    // OpenBao asks the apiserver (TokenReview) whether the token is valid.
    let jwt = kube.token_request("payments", "billing", "sidekey");
    let token = bao.kubernetes_login("billing", &jwt).unwrap();
    let secret = bao.api_with_token(&token, "GET", "secret/data/payments/stripe", None).unwrap();
    assert_eq!(secret["data"]["data"]["api_key"], "sk_test_123");

    // Another service account, or the right one with another audience, is refused.
    let other = kube.token_request("payments", "intruder", "sidekey");
    assert!(bao.kubernetes_login("billing", &other).is_err());
    let wrong_audience = kube.token_request("payments", "billing", "https://kubernetes.default.svc.cluster.local");
    assert!(bao.kubernetes_login("billing", &wrong_audience).is_err());
}

#[test]
fn tcp_proxy_cuts_and_restores_a_server() {
    let bao = OpenBao::start();
    let proxy = TcpProxy::start(bao.addr.trim_start_matches("http://"));
    let get = || ureq::get(format!("{}/v1/sys/health", proxy.url())).call().map(|r| r.status().as_u16());
    assert_eq!(get().unwrap(), 200);
    proxy.down();
    assert!(get().is_err());
    proxy.up();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(get().unwrap(), 200);
}
