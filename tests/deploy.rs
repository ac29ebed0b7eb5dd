//! The Helm chart and the plain manifests: helm lint and template with
//! default and non-default values, every rendered object valid for
//! Kubernetes 1.34, the default render applied (server-side) to a real
//! kube-apiserver in a namespace that enforces Pod Security `restricted`, and
//! the plain manifests equal to the chart's render.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use serde_json::Value;
use sidekey::yaml;
use sidekey_testenv::{KubeApi, tool};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn helm(args: &[&str]) -> String {
    let out = Command::new(tool("SIDEKEY_HELM")).args(args).current_dir(root()).output().unwrap();
    assert!(
        out.status.success(),
        "helm {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn render(extra: &[&str]) -> String {
    let mut args = vec!["template", "sidekey", "deploy/helm/sidekey", "--namespace", "sidekey"];
    args.extend_from_slice(extra);
    helm(&args)
}

/// Kinds that come from CRDs (cert-manager, Prometheus Operator): no schema in
/// kubernetes-validate, checked by shape only.
const CRD_KINDS: [&str; 3] = ["Certificate", "Issuer", "ServiceMonitor"];

fn validate(text: &str, dir: &Path, name: &str) -> Vec<Value> {
    let docs = yaml::parse_documents(text).unwrap();
    let (crds, core): (Vec<Value>, Vec<Value>) =
        docs.iter().cloned().partition(|d| CRD_KINDS.contains(&d["kind"].as_str().unwrap_or("")));
    for d in &crds {
        assert!(d["apiVersion"].is_string() && d["metadata"]["name"].is_string() && d["spec"].is_object(), "{d}");
    }
    let file = dir.join(name);
    std::fs::write(&file, yaml::to_yaml_stream(&core)).unwrap();
    let out = Command::new(tool("SIDEKEY_KUBERNETES_VALIDATE"))
        .args(["--strict", "-k", "1.34.0"])
        .arg(&file)
        .output()
        .unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !report.contains("WARN") && !report.contains("ERROR"), "{name}: {report}");
    docs
}

fn injector_config(docs: &[Value]) -> sidekey::config::InjectorConfig {
    let cm = docs.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    sidekey::config::InjectorConfig::from_yaml(cm["data"]["config.yaml"].as_str().unwrap()).unwrap()
}

#[test]
fn chart_lints_renders_valid_objects_and_accepts_only_known_values() {
    helm(&["lint", "deploy/helm/sidekey"]);
    helm(&["lint", "deploy/helm/sidekey", "--set", "tls.mode=cert-manager", "--set", "serviceMonitor.enabled=true"]);
    let dir = tempfile::tempdir().unwrap();

    let docs = validate(&render(&[]), dir.path(), "default.yaml");
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    for k in [
        "Deployment",
        "Service",
        "MutatingWebhookConfiguration",
        "ConfigMap",
        "ServiceAccount",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Role",
        "ClusterRole",
    ] {
        assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
    }
    let mwc = docs.iter().find(|d| d["kind"] == "MutatingWebhookConfiguration").unwrap();
    let w = &mwc["webhooks"][0];
    assert_eq!(
        (w["failurePolicy"].as_str(), w["sideEffects"].as_str(), w["timeoutSeconds"].as_i64()),
        (Some("Fail"), Some("None"), Some(5))
    );
    assert_eq!(w["objectSelector"]["matchLabels"]["sidekey.dev/inject"], "true");
    let excluded = w["namespaceSelector"]["matchExpressions"][0]["values"].as_array().unwrap();
    assert!(excluded.contains(&"kube-system".into()) && excluded.contains(&"sidekey".into()));
    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(deploy["spec"]["replicas"], 2);
    let pod = &deploy["spec"]["template"]["spec"];
    assert!(sidekey::pss::check_pod_spec(pod).is_empty(), "{:?}", sidekey::pss::check_pod_spec(pod));
    for c in pod["containers"].as_array().unwrap() {
        for k in ["cpu", "memory"] {
            assert!(c["resources"]["limits"][k].is_string() && c["resources"]["requests"][k].is_string());
        }
    }
    // The rendered injector config is one the injector accepts.
    let config = injector_config(&docs);
    assert!(config.vault.allowed_addrs.as_ref().is_some_and(Vec::is_empty), "the chart closes vault-addr by default");
    // RBAC: nothing beyond its own Secret and webhook configuration.
    let role = docs.iter().find(|d| d["kind"] == "Role").unwrap();
    assert!(role["rules"].as_array().unwrap().iter().all(|r| r["resources"] == serde_json::json!(["secrets"])));
    assert!(role["rules"][0]["resourceNames"] == serde_json::json!(["sidekey-injector-tls"]));
    let webhook_rules = |docs: &[Value]| docs.iter().find(|d| d["kind"] == "ClusterRole").map(|r| r["rules"].clone());
    let only_its_webhook = |verbs: Value| {
        serde_json::json!([{"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
            "resourceNames": ["sidekey-injector"], "verbs": verbs}])
    };
    assert_eq!(webhook_rules(&docs), Some(only_its_webhook(serde_json::json!(["get", "update"]))));
    let args = |docs: &[Value]| {
        let deploy = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
        deploy["spec"]["template"]["spec"]["containers"][0]["args"].clone()
    };
    assert!(args(&docs).as_array().unwrap().contains(&"--check-webhook".into()), "the webhook check is on by default");

    // Non-default values: cert-manager, digests, a CA bundle secret, policy.
    let digest = format!("sha256:{}", "a".repeat(64));
    let cm = render(&[
        "--set",
        "tls.mode=cert-manager",
        "--set",
        &format!("injector.image.digest={digest}"),
        "--set",
        &format!("agent.image.digest={digest}"),
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "injector.replicas=3",
        "--set",
        "networkPolicy.enabled=false",
        "--set",
        "config.vault.allowedAddrs[0]=https://vault.corp:8200",
    ]);
    let docs = validate(&cm, dir.path(), "cert-manager.yaml");
    assert!(docs.iter().any(|d| d["kind"] == "Certificate"));
    assert!(!docs.iter().any(|d| d["kind"] == "Role" || d["kind"] == "NetworkPolicy"), "no RBAC or policies asked for");
    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    assert_eq!(
        deploy["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("ghcr.io/sidekey/sidekey-injector@{digest}")
    );
    assert_eq!(injector_config(&docs).agent.image, format!("ghcr.io/sidekey/sidekey-agent@{digest}"));
    // The webhook check only reads the configuration; without it the
    // injector has no RBAC at all.
    assert_eq!(webhook_rules(&docs), Some(only_its_webhook(serde_json::json!(["get"]))));
    let unchecked = render(&["--set", "tls.mode=cert-manager", "--set", "injector.checkWebhook=false"]);
    let docs = validate(&unchecked, dir.path(), "unchecked.yaml");
    assert_eq!(webhook_rules(&docs), None);
    assert!(!args(&docs).as_array().unwrap().contains(&"--check-webhook".into()));
    let secret_mode = render(&["--set", "tls.mode=secret", "--set", "tls.caBundle=Y2E="]);
    let docs = validate(&secret_mode, dir.path(), "secret.yaml");
    let mwc = docs.iter().find(|d| d["kind"] == "MutatingWebhookConfiguration").unwrap();
    assert_eq!(mwc["webhooks"][0]["clientConfig"]["caBundle"], "Y2E=");
    assert_eq!(mwc["webhooks"][0]["objectSelector"]["matchLabels"]["sidekey.dev/inject"], "true");
    assert!(!injector_config(&docs).compatibility.vault_k8s);
    // vault-k8s compatibility: the webhook sees pods labelled for nobody.
    let compat = render(&["--set", "config.compatibility.vaultK8s=true"]);
    let docs = validate(&compat, dir.path(), "vault-k8s.yaml");
    let mwc = docs.iter().find(|d| d["kind"] == "MutatingWebhookConfiguration").unwrap();
    assert!(mwc["webhooks"][0].get("objectSelector").is_none(), "{mwc}");
    assert!(injector_config(&docs).compatibility.vault_k8s);

    // values.schema.json refuses unknown and malformed values.
    let out = Command::new(tool("SIDEKEY_HELM"))
        .args(["template", "x", "deploy/helm/sidekey", "--set", "tls.mode=plaintext"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new(tool("SIDEKEY_HELM"))
        .args(["template", "x", "deploy/helm/sidekey", "--set", "injector.bogus=1"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn plain_manifests_equal_the_chart_render() {
    let committed = std::fs::read_to_string(root().join("deploy/manifests/sidekey.yaml")).unwrap();
    assert_eq!(committed, render(&[]), "deploy/manifests/sidekey.yaml is stale: run `make manifests`");
}

#[test]
fn chart_applies_server_side_in_a_restricted_namespace() {
    let kube = KubeApi::start();
    kube.create_namespace("sidekey", &["pod-security.kubernetes.io/enforce=restricted"]);
    let manifests = root().join("deploy/manifests/sidekey.yaml").display().to_string();
    let out = kube.kubectl(&["apply", "--server-side", "-f", &manifests]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let warn = String::from_utf8_lossy(&out.stderr);
    assert!(!warn.contains("violate PodSecurity"), "{warn}");
    for what in [
        "deployment/sidekey-injector",
        "service/sidekey-injector",
        "poddisruptionbudget/sidekey-injector",
        "networkpolicy/default-deny",
        "role/sidekey-injector",
    ] {
        kube.kubectl_ok(&["-n", "sidekey", "get", what]);
    }
    kube.kubectl_ok(&["get", "mutatingwebhookconfiguration", "sidekey-injector"]);
    injector_may_change_only_the_ca_bundle(&kube);
    // No kubelet runs pods here: create the Deployment's pod directly, which
    // PodSecurity admission checks against restricted.
    let deploy: Value = serde_json::from_str(&kube.kubectl_ok(&[
        "-n",
        "sidekey",
        "get",
        "deployment",
        "sidekey-injector",
        "-o",
        "json",
    ]))
    .unwrap();
    let mut pod = deploy["spec"]["template"].clone();
    pod["apiVersion"] = "v1".into();
    pod["kind"] = "Pod".into();
    pod["metadata"]["name"] = "sidekey-injector-test".into();
    pod["metadata"]["namespace"] = "sidekey".into();
    let out = kube.kubectl_stdin(&["create", "-f", "-"], &pod.to_string());
    assert!(
        out.status.success(),
        "the injector's pod is not admitted under restricted: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// RBAC lets the injector's ServiceAccount update its webhook
/// configuration; the chart's ValidatingAdmissionPolicy narrows that to the
/// caBundle, so a compromised injector cannot widen its own scope.
fn injector_may_change_only_the_ca_bundle(kube: &KubeApi) {
    let sa = "system:serviceaccount:sidekey:sidekey-injector";
    // The injector updates with PUT (its RBAC has get and update, no patch).
    let patch = |path: &str, value: Value, who: Option<&str>| {
        let mut config: Value = serde_json::from_str(&kube.kubectl_ok(&[
            "get",
            "mutatingwebhookconfiguration",
            "sidekey-injector",
            "-o",
            "json",
        ]))
        .unwrap();
        let (parent, key) = path.rsplit_once('/').unwrap();
        config.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}"))[key] = value;
        let mut args = vec!["replace", "-f", "-"];
        if let Some(who) = who {
            args.extend(["--as", who]);
        }
        kube.kubectl_stdin(&args, &config.to_string())
    };
    // The policy takes effect once the apiserver has loaded it: until the
    // widening patch is refused, undo it and try again.
    let mut tries = 0;
    let refused = loop {
        let out = patch("/webhooks/0/failurePolicy", "Ignore".into(), Some(sa));
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        assert!(patch("/webhooks/0/failurePolicy", "Fail".into(), None).status.success());
        tries += 1;
        assert!(tries < 60, "the injector could still change its failurePolicy after 30 s");
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(refused.contains("may change only its webhooks' clientConfig.caBundle"), "{refused}");
    for (path, value) in [
        ("/webhooks/0/rules/0/operations", serde_json::json!(["CREATE", "UPDATE"])),
        ("/webhooks/0/objectSelector", serde_json::json!({})),
        ("/webhooks/0/namespaceSelector", serde_json::json!({})),
        ("/webhooks/0/clientConfig/service/name", "elsewhere".into()),
        ("/metadata/labels", serde_json::json!({"x": "y"})),
    ] {
        let out = patch(path, value, Some(sa));
        assert!(!out.status.success(), "the injector changed {path}");
    }
    // The caBundle it rotates: allowed. Anyone else: not this policy's business.
    let ca = base64::engine::general_purpose::STANDARD.encode("not a real CA, for the test");
    let out = patch("/webhooks/0/clientConfig/caBundle", ca.into(), Some(sa));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(patch("/webhooks/0/timeoutSeconds", 5.into(), None).status.success());
}
