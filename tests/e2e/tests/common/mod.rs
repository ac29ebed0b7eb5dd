//! What the end-to-end tests share: a child process killed when dropped,
//! and the injector behind a kube-apiserver's webhook configuration.

#![allow(dead_code, clippy::unwrap_used, clippy::disallowed_methods)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use sidekey_testenv::{KubeApi, free_port, wait_until};

/// A process and its log file, killed when dropped.
pub struct Proc(pub Child, pub std::path::PathBuf);

impl Proc {
    /// What it wrote.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `bin` with only `env` (and PATH), its output in `log`.
pub fn spawn(bin: &str, args: &[String], env: &[(String, String)], log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(bin)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    Proc(child, log.to_owned())
}

/// Starts the injector behind the apiserver with `config` (YAML), and a
/// webhook configuration without objectSelector that calls it.
pub fn injector(kube: &KubeApi, dir: &Path, config: &str) -> Proc {
    let cert = kube.sign_serving_cert(&["localhost"]);
    std::fs::write(dir.join("tls.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &cert.key_pem).unwrap();
    std::fs::write(dir.join("injector.yaml"), config).unwrap();
    let (port, admin) = (free_port(), free_port());
    let args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
        "--tls-cert",
        &dir.join("tls.crt").display().to_string(),
        "--tls-key",
        &dir.join("tls.key").display().to_string(),
        "--config",
        &dir.join("injector.yaml").display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let p = spawn(env!("CARGO_BIN_EXE_e2e-injector"), &args, &[], &dir.join("injector.log"));
    wait_until(
        "the injector",
        Duration::from_secs(30),
        || ureq::get(format!("http://127.0.0.1:{admin}/readyz")).call().is_ok_and(|r| r.status() == 200),
        || p.log(),
    );
    use base64::Engine;
    let mwc = json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "sidekey-injector"},
        "webhooks": [{"name": "inject.sidekey.dev",
            "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate"),
                             "caBundle": base64::engine::general_purpose::STANDARD.encode(&kube.ca_pem)},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail", "timeoutSeconds": 5,
            "reinvocationPolicy": "IfNeeded"}]
    });
    let out = kube.kubectl_stdin(&["apply", "-f", "-"], &mwc.to_string());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    p
}

/// The pod of a manifest's first document: a Pod as it is, a workload's
/// template made a Pod named `name` (there are no controllers here).
pub fn pod_of(text: &str, name: &str) -> Value {
    let doc = sidekey::yaml::parse_documents(text).unwrap().remove(0);
    if doc["kind"] == "Pod" {
        return doc;
    }
    let mut pod = doc["spec"]["template"].clone();
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod["metadata"]["name"] = json!(name);
    if let Some(ns) = doc.pointer("/metadata/namespace") {
        pod["metadata"]["namespace"] = ns.clone();
    }
    pod
}
