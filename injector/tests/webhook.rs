//! The injector behind a real kube-apiserver: pods created with kubectl
//! pass through the MutatingWebhookConfiguration to the running binary.

#![allow(clippy::unwrap_used, clippy::disallowed_methods, missing_docs)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sidekey_testenv::{KubeApi, free_port, wait_until};

struct Injector {
    child: Child,
    port: u16,
    admin: u16,
    log: std::path::PathBuf,
}

impl Injector {
    fn spawn(args: &[&str], envs: &[(&str, &str)], dir: &Path) -> Injector {
        Self::spawn_on(free_port(), args, envs, dir)
    }

    /// Starts the injector with its webhook on `port` (known in advance when
    /// the webhook configuration must exist first).
    fn spawn_on(port: u16, args: &[&str], envs: &[(&str, &str)], dir: &Path) -> Injector {
        let admin = free_port();
        let log = dir.join(format!("injector-{port}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sidekey-injector"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let inj = Injector { child, port, admin, log };
        wait_until(
            "the injector to be ready",
            Duration::from_secs(30),
            || ureq::get(format!("http://127.0.0.1:{admin}/readyz")).call().is_ok_and(|r| r.status() == 200),
            || inj.log(),
        );
        inj
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metrics(&self) -> String {
        ureq::get(format!("http://127.0.0.1:{}/metrics", self.admin))
            .call()
            .map(|mut r| r.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The MutatingWebhookConfiguration the Helm chart installs, pointed at a URL.
fn webhook_config(name: &str, url: &str, ca_bundle: Option<&str>) -> String {
    let mut client = json!({"url": url});
    if let Some(ca) = ca_bundle {
        use base64::Engine;
        client["caBundle"] = json!(base64::engine::general_purpose::STANDARD.encode(ca));
    }
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [{
            "name": "inject.sidekey.dev",
            "clientConfig": client,
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 5,
            "reinvocationPolicy": "IfNeeded",
            "namespaceSelector": {"matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]}
        }]
    })
    .to_string()
}

fn pod_json(kube: &KubeApi, ns: &str, name: &str) -> Value {
    serde_json::from_str(&kube.kubectl_ok(&["-n", ns, "get", "pod", name, "-o", "json"])).unwrap()
}

const CONFIG: &str = "vault:\n  addr: https://vault.internal:8200\n  allowedAddrs: [\"https://vault.logging.svc:8200\"]\npolicy:\n  rules:\n    - namespaces: [team-a]\n      references: [\"vault:secret/data/team-a/*\"]\n";

fn corpus(file: &str) -> String {
    std::fs::read_to_string(sidekey_testenv::corpus_dir().join("valid").join(file)).unwrap()
}

#[test]
fn injects_denies_and_warns_through_a_real_apiserver() {
    let kube = KubeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = serving_files(&kube, dir.path());
    std::fs::write(dir.path().join("config.yaml"), CONFIG).unwrap();
    let d = dir.path().display().to_string();
    let inj = Injector::spawn(
        &["--tls-cert", &crt, "--tls-key", &key, "--config", &format!("{d}/config.yaml")],
        &[],
        dir.path(),
    );
    let url = format!("https://127.0.0.1:{}/mutate", inj.port);
    let out = kube.kubectl_stdin(&["apply", "-f", "-"], &webhook_config("sidekey-injector", &url, Some(&kube.ca_pem)));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // A restricted pod in a namespace that enforces restricted: injected and still admitted.
    kube.create_namespace("payments", &["pod-security.kubernetes.io/enforce=restricted"]);
    kube.create_service_account("payments", "billing-api");
    let out = kube.kubectl_stdin(&["apply", "-f", "-"], &corpus("01-pod-restricted-vault.yaml"));
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), inj.log());
    let pod = pod_json(&kube, "payments", "billing-api");
    assert_eq!(pod["metadata"]["annotations"]["sidekey.dev/status"], "injected");
    let agent = &pod["spec"]["initContainers"][0];
    assert_eq!(agent["name"], "sidekey-agent");
    assert_eq!(agent["restartPolicy"], "Always");
    assert!(
        pod["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "sidekey-secrets" && v["emptyDir"]["medium"] == "Memory")
    );
    let mounts = pod["spec"]["containers"][0]["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().any(|m| m["name"] == "sidekey-secrets" && m["readOnly"] == true));
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "DB_PASSWORD_FILE"));
    assert!(!env.iter().any(|e| e["name"] == "DB_PASSWORD"));

    // An invalid opted-in pod is rejected with the injector's message (the
    // webhook sees it before the API server validates annotation keys).
    kube.create_namespace("analytics", &[]);
    kube.create_service_account("analytics", "default");
    let bad = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"reports","namespace":"analytics",
        "annotations":{"sidekey.dev/inject":"true","sidekey.dev/secret-../../../etc/kubernetes/admin-conf":"vault:secret/data/analytics/kubeconfig",
                       "sidekey.dev/secret-stripe-key":"gcp:projects/p/secrets/s"}},
        "spec":{"automountServiceAccountToken":false,"containers":[{"name":"api","image":"x"}]}}"#;
    let out = kube.kubectl_stdin(&["create", "-f", "-"], bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("denied the request") && err.contains("sidekey.dev/secret-../../../etc/kubernetes/admin-conf"),
        "{err}"
    );
    assert!(err.contains("sidekey.dev/secret-stripe-key") && err.contains("gcp:"), "{err}");

    // A Deployment's pods are not created here (no controllers), so the
    // Deployment itself passes; a bare pod that did not opt in is stored
    // unchanged and kubectl shows the warning.
    kube.create_namespace("jobs", &[]);
    let plain = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"legacy","namespace":"jobs"},
        "spec":{"automountServiceAccountToken":false,"serviceAccountName":"default","containers":[{"name":"w","image":"x","env":[{"name":"API_TOKEN","value":"vault:secret/data/jobs/api#token"}]}]}}"#;
    kube.create_service_account("jobs", "default");
    let out = kube.kubectl_stdin(&["create", "-f", "-"], plain);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let warn = String::from_utf8_lossy(&out.stderr);
    assert!(warn.contains("Warning:") && warn.contains("env API_TOKEN"), "{warn}");
    let stored = pod_json(&kube, "jobs", "legacy");
    assert!(stored["metadata"]["annotations"].get("sidekey.dev/status").is_none());
    assert_eq!(stored["spec"]["containers"][0]["env"][0]["value"], "vault:secret/data/jobs/api#token");

    // A reference outside the namespace's policy is denied.
    kube.create_namespace("team-a", &[]);
    kube.create_service_account("team-a", "default");
    let sneaky = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"sneaky","namespace":"team-a",
        "annotations":{"sidekey.dev/inject":"true","sidekey.dev/secret-db":"vault:secret/data/payments/db#password"}},
        "spec":{"automountServiceAccountToken":false,"containers":[{"name":"w","image":"x"}]}}"#;
    let out = kube.kubectl_stdin(&["create", "-f", "-"], sneaky);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not allowed in namespace \"team-a\""), "{err}");

    // A vault-addr outside the allowlist is denied (no annotation chooses where credentials go).
    let ssrf = sneaky
        .replace("sneaky", "ssrf")
        .replace("vault:secret/data/payments/db#password", "vault:secret/data/team-a/db#password")
        .replace(
            "\"sidekey.dev/inject\":\"true\"",
            "\"sidekey.dev/inject\":\"true\",\"sidekey.dev/vault-addr\":\"https://attacker.example:8200\"",
        );
    let out = kube.kubectl_stdin(&["create", "-f", "-"], &ssrf);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("sidekey.dev/vault-addr"), "{err}");

    let m = inj.metrics();
    assert!(m.contains("sidekey_injector_injections_total 1"), "{m}");
    assert!(m.contains("sidekey_injector_denials_total 3"), "{m}");
    assert!(m.contains("sidekey_injector_request_duration_seconds_count"), "{m}");
    // No pod spec or env value in the log.
    let log = inj.log();
    assert!(!log.contains("vault:secret/data/jobs/api#token") && !log.contains("DB_PASSWORD\""), "{log}");
}

#[test]
fn replacing_the_serving_cert_files_while_requests_flow_loses_no_request() {
    let kube = KubeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let write = |c: &sidekey_testenv::SignedCert| {
        // As a mounted Secret updates: new files, then rename over the old ones.
        std::fs::write(dir.path().join("tls.crt.new"), &c.cert_pem).unwrap();
        std::fs::write(dir.path().join("tls.key.new"), &c.key_pem).unwrap();
        std::fs::rename(dir.path().join("tls.key.new"), dir.path().join("tls.key")).unwrap();
        std::fs::rename(dir.path().join("tls.crt.new"), dir.path().join("tls.crt")).unwrap();
    };
    write(&kube.sign_serving_cert(&["localhost"]));
    let d = dir.path().display().to_string();
    let inj = Injector::spawn(
        &["--tls-cert", &format!("{d}/tls.crt"), "--tls-key", &format!("{d}/tls.key")],
        &[],
        dir.path(),
    );
    let url = format!("https://127.0.0.1:{}/mutate", inj.port);
    kube.kubectl_stdin(&["apply", "-f", "-"], &webhook_config("sidekey-injector", &url, Some(&kube.ca_pem)));
    kube.create_namespace("load", &[]);
    kube.create_service_account("load", "default");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let (stop, kubeconfig) = (stop.clone(), kube.kubeconfig.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                let mut failures = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let pod = format!(
                        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"p-{w}-{n}","namespace":"load","annotations":{{"sidekey.dev/inject":"true","sidekey.dev/secret-k":"vault:secret/data/load/k#v"}}}},"spec":{{"automountServiceAccountToken":false,"containers":[{{"name":"c","image":"x"}}]}}}}"#
                    );
                    let out = sidekey_testenv_kubectl(&kubeconfig, &pod);
                    if !out.0 {
                        failures.push(out.1);
                    }
                    n += 1;
                }
                (n, failures)
            })
        })
        .collect();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        write(&kube.sign_serving_cert(&["localhost"]));
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut total = 0;
    for w in workers {
        let (n, failures) = w.join().unwrap();
        assert!(failures.is_empty(), "requests failed while the certificate was replaced: {failures:?}");
        total += n;
    }
    assert!(total >= 10, "only {total} pods created");
    let m = inj.metrics();
    let reloads: f64 = m
        .lines()
        .find(|l| l.starts_with("sidekey_injector_tls_reloads_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(reloads >= 3.0, "{m}");
    // The served certificate's end is published (the test CA signs for a year or so).
    let expiry: i64 = m
        .lines()
        .find(|l| l.starts_with("sidekey_injector_certificate_expiry_timestamp_seconds "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!(expiry > now + 3600, "certificate expiry {expiry} (now {now}): {m}");
}

fn sidekey_testenv_kubectl(kubeconfig: &Path, stdin: &str) -> (bool, String) {
    let mut cmd = Command::new("kubectl");
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display())).args(["create", "-f", "-"]);
    let out = sidekey_testenv::output_with_stdin(&mut cmd, stdin);
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn self_managed_tls_works_from_an_empty_cluster_and_replicas_share_one_ca() {
    let kube = KubeApi::start();
    let dir = tempfile::tempdir().unwrap();
    kube.create_namespace("sidekey", &[]);
    let port = free_port();
    // The configuration exists without a caBundle, as the chart creates it.
    let url = format!("https://127.0.0.1:{port}/mutate");
    let out = kube.kubectl_stdin(&["apply", "-f", "-"], &webhook_config("sidekey-injector", &url, None));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kubeconfig = kube.kubeconfig.display().to_string();
    let env = [("KUBECONFIG", kubeconfig.as_str()), ("POD_NAMESPACE", "sidekey")];
    let inj = Injector::spawn_on(port, &["--tls-self-managed", "--tls-san", "127.0.0.1"], &env, dir.path());
    let get_json = |args: &[&str]| -> Value { serde_json::from_str(&kube.kubectl_ok(args)).unwrap() };
    let mwc = get_json(&["get", "mutatingwebhookconfiguration", "sidekey-injector", "-o", "json"]);
    let bundle = mwc["webhooks"][0]["clientConfig"]["caBundle"].as_str().unwrap().to_owned();
    assert!(!bundle.is_empty());
    let secret = get_json(&["-n", "sidekey", "get", "secret", "sidekey-injector-tls", "-o", "json"]);
    let ca = secret["data"]["ca.crt"].as_str().unwrap().to_owned();
    assert_eq!(secret["type"], "kubernetes.io/tls");

    kube.create_namespace("shop", &[]);
    kube.create_service_account("shop", "default");
    let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":"shop","annotations":{"sidekey.dev/inject":"true","sidekey.dev/secret-k":"vault:secret/data/shop/k#v"}},"spec":{"automountServiceAccountToken":false,"containers":[{"name":"c","image":"x"}]}}"#;
    let out = kube.kubectl_stdin(&["create", "-f", "-"], pod);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), inj.log());
    assert_eq!(pod_json(&kube, "shop", "p")["metadata"]["annotations"]["sidekey.dev/status"], "injected");

    // A second replica reuses the Secret: one CA for all.
    let second = Injector::spawn(&["--tls-self-managed", "--tls-san", "127.0.0.1"], &env, dir.path());
    let secret = get_json(&["-n", "sidekey", "get", "secret", "sidekey-injector-tls", "-o", "json"]);
    assert_eq!(secret["data"]["ca.crt"].as_str().unwrap(), ca);
    drop(second);

    // The serving certificate wiped (as a `helm upgrade` of the chart's
    // earlier Secret, or an `apply` of a manifest listing the keys empty,
    // did): a replica that starts then issues a new one from the same CA,
    // so the published caBundle still holds.
    let wipe = r#"{"data":{"tls.crt":"","tls.key":""}}"#;
    kube.kubectl_ok(&["-n", "sidekey", "patch", "secret", "sidekey-injector-tls", "--type=merge", "-p", wipe]);
    let third = Injector::spawn(&["--tls-self-managed", "--tls-san", "127.0.0.1"], &env, dir.path());
    let secret = get_json(&["-n", "sidekey", "get", "secret", "sidekey-injector-tls", "-o", "json"]);
    assert_eq!(secret["data"]["ca.crt"].as_str().unwrap(), ca, "the CA is kept");
    assert!(secret["data"]["tls.crt"].as_str().is_some_and(|c| !c.is_empty()), "{secret}");
    assert!(third.log().contains("issued a new one from its CA"), "{}", third.log());
    drop(third);
    drop(inj);
}

/// A serving certificate from the apiserver's CA in `dir`: the paths of
/// `tls.crt` and `tls.key`.
fn serving_files(kube: &KubeApi, dir: &Path) -> (String, String) {
    let cert = kube.sign_serving_cert(&["localhost"]);
    std::fs::write(dir.join("tls.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &cert.key_pem).unwrap();
    (dir.join("tls.crt").display().to_string(), dir.join("tls.key").display().to_string())
}

#[test]
fn sigterm_finishes_and_exits_promptly() {
    let kube = KubeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = serving_files(&kube, dir.path());
    let mut inj = Injector::spawn(&["--tls-cert", &crt, "--tls-key", &key], &[], dir.path());
    let start = std::time::Instant::now();
    Command::new("kill").args(["-TERM", &inj.child.id().to_string()]).status().unwrap();
    let status = inj.child.wait().unwrap();
    assert!(status.success(), "{}", inj.log());
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(inj.log().contains("shutting down"));
}

/// A TLS client for an injector serving a certificate from `ca`.
fn tls_connect(
    port: u16,
    ca: &rcgen::Certificate,
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap()).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

#[test]
fn slow_bodies_are_cut_off_and_connections_are_bounded() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::NoCa;
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), key.serialize_pem()).unwrap();
    let d = dir.path().display().to_string();
    let inj = Injector::spawn(
        &[
            "--tls-cert",
            &format!("{d}/tls.crt"),
            "--tls-key",
            &format!("{d}/tls.key"),
            "--body-timeout",
            "1s",
            "--max-connections",
            "3",
        ],
        &[],
        dir.path(),
    );

    // A body that never finishes: 408 after the deadline, not a held connection.
    let mut slow = tls_connect(inj.port, &cert);
    slow.write_all(b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n{\"apiVersion\":")
        .unwrap();
    let mut answer = vec![0u8; 64];
    let n = slow.read(&mut answer).unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );

    // Three connections held open: a fourth is closed at once.
    let mut held: Vec<_> = (0..3)
        .map(|_| {
            let mut c = tls_connect(inj.port, &cert);
            c.conn.complete_io(&mut c.sock).unwrap();
            c
        })
        .collect();
    drop(slow);
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = tls_connect(inj.port, &cert);
    let refused = extra.conn.complete_io(&mut extra.sock).is_err()
        || extra.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").is_err()
        || extra.read(&mut answer).map_or(true, |n| n == 0);
    assert!(refused, "a connection beyond --max-connections was served");
    // One closed: a new one is served again.
    held.pop();
    std::thread::sleep(Duration::from_millis(200));
    let mut again = tls_connect(inj.port, &cert);
    again.write_all(b"GET /mutate HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let n = again.read(&mut answer).unwrap();
    assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 404"));
    let m = inj.metrics();
    assert!(m.contains("body_timeout") && m.contains("too_many_connections"), "{m}");
}

/// Large bodies share a buffer budget (four of the largest size): clients
/// holding it make other large bodies wait for it, not the typical small
/// review; a body declared over the limit is refused before it is read.
#[test]
fn large_bodies_share_a_budget_and_small_reviews_do_not_wait_for_it() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().self_signed(&key).unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), key.serialize_pem()).unwrap();
    let d = dir.path().display().to_string();
    let tls = [format!("{d}/tls.crt"), format!("{d}/tls.key")];
    let inj = Injector::spawn(&["--tls-cert", &tls[0], "--tls-key", &tls[1], "--body-timeout", "3s"], &[], dir.path());
    let status = |c: &mut rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>| {
        let mut answer = vec![0u8; 4096];
        let n = c.read(&mut answer).unwrap();
        String::from_utf8_lossy(&answer[..n]).lines().next().unwrap_or_default().to_owned()
    };
    let max = sidekey_injector::review::MAX_BODY;

    // Declared over the limit: 413 at once.
    let mut big = tls_connect(inj.port, &cert);
    write!(big, "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n", max + 1).unwrap();
    assert_eq!(status(&mut big), "HTTP/1.1 413 Payload Too Large");

    // Four clients announce the largest body and stall: the budget is theirs.
    let mut stalled: Vec<_> = (0..4)
        .map(|_| {
            let mut c = tls_connect(inj.port, &cert);
            write!(c, "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: {max}\r\n\r\n{{").unwrap();
            c.flush().unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A large review now waits for the budget…
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {"pad": "x".repeat(100_000)}},
        "spec": {"containers": [{"name": "app", "image": "x"}]}});
    let review = |object: &Value| {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "u1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE", "namespace": "ns", "object": object}})
        .to_string()
    };
    let post = |body: &str| {
        let mut c = tls_connect(inj.port, &cert);
        write!(c, "POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
        c.flush().unwrap();
        c
    };
    let mut large = post(&review(&pod));
    // …while a typical one is answered at once, before any stalled client is cut off.
    let small_pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "q"}, "spec": {"containers": [{"name": "app", "image": "x"}]}});
    let mut small = post(&review(&small_pod));
    assert_eq!(status(&mut small), "HTTP/1.1 200 OK");
    for c in &mut stalled {
        c.sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut b = [0u8; 1];
        assert!(c.read(&mut b).is_err(), "a stalled client was answered before the small review");
        c.sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    }
    large.sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    assert!(large.read(&mut [0u8; 1]).is_err(), "the large review did not wait for the budget");
    large.sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The stalled clients get 408 at their deadline; then the large review is answered.
    for c in &mut stalled {
        assert_eq!(status(c), "HTTP/1.1 408 Request Timeout");
    }
    assert_eq!(status(&mut large), "HTTP/1.1 200 OK");
}

/// The value of `sidekey_injector_webhook_configuration_healthy{check}`.
fn webhook_health(inj: &Injector, check: &str) -> Option<i64> {
    let series = format!("sidekey_injector_webhook_configuration_healthy{{check=\"{check}\"}} ");
    inj.metrics().lines().find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
}

fn wait_health(inj: &Injector, want: [(&str, i64); 3]) {
    wait_until(
        &format!("webhook checks {want:?}"),
        Duration::from_secs(30),
        || want.iter().all(|(check, v)| webhook_health(inj, check) == Some(*v)),
        || format!("{}\n{}", inj.metrics(), inj.log()),
    );
}

#[test]
fn the_injector_checks_its_webhook_configuration_as_the_apiserver_uses_it() {
    let kube = KubeApi::start();
    let dir = tempfile::tempdir().unwrap();
    let (crt, key) = serving_files(&kube, dir.path());
    let kubeconfig = kube.kubeconfig.display().to_string();
    let args = ["--tls-cert", &crt, "--tls-key", &key, "--check-webhook", "--check-webhook-interval", "1s"];
    let inj = Injector::spawn(&args, &[("KUBECONFIG", &kubeconfig)], dir.path());
    // No configuration yet (a race during install, or it was deleted).
    wait_health(&inj, [("configuration", 0), ("ca_bundle", 0), ("service", 0)]);
    assert!(inj.log().contains("reading MutatingWebhookConfiguration sidekey-injector"), "{}", inj.log());

    // As installed: every check passes, and the recovery is logged.
    let apply = |url: &str, ca: &str| {
        let out = kube.kubectl_stdin(&["apply", "-f", "-"], &webhook_config("sidekey-injector", url, Some(ca)));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    let url = format!("https://127.0.0.1:{}/mutate", inj.port);
    apply(&url, &kube.ca_pem);
    wait_health(&inj, [("configuration", 1), ("ca_bundle", 1), ("service", 1)]);
    assert!(inj.log().contains("passes the check again"), "{}", inj.log());

    // A caBundle of another CA (a stale bundle after a CA rotation, or one
    // cert-manager never injected): the apiserver could not call the webhook.
    let other = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap()
        .pem();
    apply(&url, &other);
    wait_health(&inj, [("configuration", 1), ("ca_bundle", 0), ("service", 0)]);
    assert!(inj.log().contains("the caBundle does not trust the served certificate for 127.0.0.1"), "{}", inj.log());

    // The right caBundle, but the endpoint answers nowhere (a Service
    // without endpoints, a wrong port).
    apply(&format!("https://127.0.0.1:{}/mutate", free_port()), &kube.ca_pem);
    wait_health(&inj, [("configuration", 1), ("ca_bundle", 1), ("service", 0)]);
    assert!(inj.log().contains("connecting to 127.0.0.1:"), "{}", inj.log());

    // Pods are still injected through the healthy configuration.
    apply(&url, &kube.ca_pem);
    wait_health(&inj, [("configuration", 1), ("ca_bundle", 1), ("service", 1)]);
    assert_eq!(webhook_health(&inj, "service"), Some(1));
}
