//! The whole chain without a kubelet: kube-apiserver with the injector's
//! MutatingWebhookConfiguration → `kubectl apply` of an example workload's
//! pod → the stored, mutated pod → the agent started with exactly the env and
//! args of its container in that spec (a temp directory standing in for the
//! tmpfs, a TokenRequest token for the pod's service account) → the app
//! started with its container's env from the stored spec.

#![allow(clippy::unwrap_used, clippy::disallowed_methods, missing_docs)]

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use sidekey_testenv::{KubeApi, Moto, OpenBao, Postgres, wait_until};

mod common;
use common::{injector, pod_of, spawn};

const MOUNT: &str = "/run/secrets/sidekey";

/// The pod of an example manifest (a Deployment's template becomes a Pod).
fn example_pod(file: &str, name: &str) -> Value {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/workloads").join(file))
            .unwrap();
    pod_of(&text, name)
}

fn container<'a>(pod: &'a Value, list: &str, name: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

/// The agent's env and args from the stored spec, its paths mapped into `root`.
fn agent_from_spec(pod: &Value, root: &Path, token: Option<&str>) -> (Vec<String>, Vec<(String, String)>) {
    let agent = container(pod, "initContainers", "sidekey-agent");
    let args: Vec<String> = agent["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
    let mut env = Vec::new();
    for e in agent["env"].as_array().unwrap() {
        let Some(value) = e["value"].as_str() else { continue };
        let mut value = value.to_owned();
        if e["name"] == "SIDEKEY_CONFIG" {
            let mut cfg: Value = serde_json::from_str(&value).unwrap();
            assert_eq!(cfg["mountPath"], MOUNT);
            cfg["mountPath"] = json!(root.join("secrets"));
            if cfg.get("stateDir").is_some() {
                std::fs::create_dir_all(root.join("state")).unwrap();
                cfg["stateDir"] = json!(root.join("state"));
            }
            if let (Some(t), Some(_)) = (token, cfg.get("vault")) {
                let path = root.join("token");
                std::fs::write(&path, t).unwrap();
                cfg["vault"]["auth"]["tokenPath"] = json!(path);
            }
            value = cfg.to_string();
        }
        env.push((e["name"].as_str().unwrap().to_owned(), value));
    }
    std::fs::create_dir_all(root.join("secrets")).unwrap();
    (args, env)
}

#[test]
fn kubectl_apply_to_an_app_that_follows_rotation_for_60_seconds() {
    let kube = KubeApi::start();
    let pg = Postgres::start();
    let bao = OpenBao::start();
    let dir = tempfile::tempdir().unwrap();
    bao.enable_postgres(&pg, "orders", 10, 30);
    bao.put_policy(
        "orders",
        "path \"database/creds/orders\" { capabilities = [\"read\"] }\npath \"sys/leases/renew\" { capabilities = [\"update\"] }\npath \"secret/data/shop/*\" { capabilities = [\"read\"] }\npath \"secret/metadata/shop/*\" { capabilities = [\"read\"] }\n",
    );
    bao.kv_put("shop/orders", json!({"api_key": "e2e-api-key"}));
    bao.enable_kubernetes_auth(&kube, "orders", "shop", "orders", "sidekey", &["orders"]);
    let _inj = injector(&kube, dir.path(), &format!("vault:\n  addr: {}\n  allowHttp: true\n", bao.addr));
    kube.create_namespace("shop", &["pod-security.kubernetes.io/enforce=restricted"]);
    kube.create_service_account("shop", "orders");

    let pod = example_pod("orders-app.yaml", "orders-0");
    let out = kube.kubectl_stdin(&["apply", "-f", "-"], &pod.to_string());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored: Value =
        serde_json::from_str(&kube.kubectl_ok(&["-n", "shop", "get", "pod", "orders-0", "-o", "json"])).unwrap();
    // The values never reach the spec (nor etcd): only references and file paths.
    let spec_text = stored.to_string();
    assert!(!spec_text.contains("\"DB_PASSWORD\""));

    // The agent, from the stored spec, with a TokenRequest token of the pod's account.
    let audience = stored["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "sidekey-token").unwrap()
        ["projected"]["sources"][0]["serviceAccountToken"]["audience"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = kube.token_request("shop", stored["spec"]["serviceAccountName"].as_str().unwrap(), &audience);
    let (args, env) = agent_from_spec(&stored, dir.path(), Some(&token));
    let agent = spawn(env!("CARGO_BIN_EXE_e2e-agent"), &args, &env, &dir.path().join("agent.log"));

    // The app, with its container's env from the stored spec.
    let app_spec = container(&stored, "containers", "app");
    let mut app_env: Vec<(String, String)> = app_spec["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.replace(MOUNT, &dir.path().join("secrets").display().to_string()),
            ))
        })
        .collect();
    assert!(app_env.iter().any(|(k, _)| k == "DB_PASSWORD_FILE"));
    app_env.retain(|(k, _)| k != "DB_HOST");
    app_env.extend([
        ("DB_HOST".into(), "127.0.0.1".into()),
        ("DB_PORT".into(), pg.port.to_string()),
        ("RUN_SECONDS".into(), "60".into()),
    ]);
    let password_file = app_env.iter().find(|(k, _)| k == "DB_PASSWORD_FILE").unwrap().1.clone();
    wait_until(
        "the agent's first render",
        Duration::from_secs(30),
        || Path::new(&password_file).exists(),
        || agent.log(),
    );
    let mut app = spawn(env!("CARGO_BIN_EXE_e2e-app"), &[], &app_env, &dir.path().join("app.log"));
    let status = app.0.wait().unwrap();
    let log = app.log();
    let summary: Value = serde_json::from_str(log.lines().last().unwrap_or("{}")).unwrap_or_default();
    assert!(status.success() && summary["failures"] == 0, "app: {log}\nagent: {}", agent.log());
    assert!(summary["queries"].as_u64().unwrap() >= 250, "{summary}");
    assert!(summary["users"].as_array().unwrap().len() >= 3, "credentials rotated fewer than twice: {summary}");
    assert!(summary["reconnects"].as_u64().unwrap() >= 2, "{summary}");
}

#[test]
fn exec_mode_with_an_aws_secret_keeps_the_value_out_of_the_spec() {
    let kube = KubeApi::start();
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let value = format!("tok-{:016x}", std::process::id() as u64 * 7919);
    moto.create_secret("prod/report", &json!({"token": value}).to_string());
    let _inj = injector(&kube, dir.path(), &format!("aws:\n  region: us-east-1\n  endpoint: {}\n", moto.endpoint));
    kube.create_namespace("analytics", &["pod-security.kubernetes.io/enforce=restricted"]);
    kube.create_service_account("analytics", "report");
    let out = kube.kubectl_stdin(&["apply", "-f", "-"], &example_pod("report-exec-aws.yaml", "report").to_string());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored_text = kube.kubectl_ok(&["-n", "analytics", "get", "pod", "report", "-o", "json"]);
    assert!(!stored_text.contains(&value));
    let stored: Value = serde_json::from_str(&stored_text).unwrap();

    // The agent renders once the way the pod's sidecar would.
    let (args, mut env) = agent_from_spec(&stored, dir.path(), None);
    env.extend([
        ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
        ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
    ]);
    let agent = spawn(env!("CARGO_BIN_EXE_e2e-agent"), &args, &env, &dir.path().join("agent.log"));

    // The app container's command as stored: the wrapper around the original.
    let app = container(&stored, "containers", "report");
    let command: Vec<String> =
        app["command"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_owned()).collect();
    assert_eq!(command[0], "/sidekey/bin/sidekey-agent");
    assert_eq!(command[1], "exec");
    let secrets = dir.path().join("secrets").display().to_string();
    let out_file = dir.path().join("out");
    let args: Vec<String> = command[1..].iter().map(|c| c.replace(MOUNT, &secrets)).collect();
    let env: Vec<(String, String)> = app["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_owned(), e["value"].as_str()?.to_owned())))
        .map(|(k, v)| if k == "OUT" { (k, out_file.display().to_string()) } else { (k, v) })
        .collect();
    assert!(!env.iter().any(|(k, _)| k == "API_TOKEN"), "the variable is not in the spec");
    let mut wrapped = spawn(env!("CARGO_BIN_EXE_e2e-agent"), &args, &env, &dir.path().join("app.log"));
    let status = wrapped.0.wait().unwrap();
    assert!(status.success(), "{}\n{}", wrapped.log(), agent.log());
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), format!("token={value}\n"));

    // Rotation: a new version in Secrets Manager reaches the file within the
    // pod's refresh (1 s), and the next start of the command gets it.
    let rotated = format!("{value}-rotated");
    moto.put_secret_value("prod/report", &json!({"token": rotated}).to_string());
    let file = std::fs::read_dir(dir.path().join("secrets"))
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("api-token-"))
        .unwrap();
    wait_until(
        "the new version on disk",
        Duration::from_secs(5),
        || std::fs::read_to_string(&file).unwrap_or_default() == rotated,
        || agent.log(),
    );
    let mut again = spawn(env!("CARGO_BIN_EXE_e2e-agent"), &args, &env, &dir.path().join("app2.log"));
    assert!(again.0.wait().unwrap().success(), "{}", again.log());
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), format!("token={rotated}\n"));
    assert!(!agent.log().contains(&value));
    assert_eq!(moto.request_counts().get("GetSecretValue"), Some(&2), "read once, and once more after the new version");
}
