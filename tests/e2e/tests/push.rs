//! Moving a Kubernetes Secret out, end to end: `sidekey audit --cluster`
//! finds the env-var secrets of workloads stored in the kube-apiserver;
//! `sidekey migrate --push` copies the Secrets' values into OpenBao (read
//! from the cluster) or Secrets Manager (moto, from manifests); `sidekey
//! inject` adds the agent; the agent, run with the injected config, renders
//! files byte-identical to the Secret's values. No value appears in any
//! output of any command.

#![allow(clippy::unwrap_used, clippy::disallowed_methods, missing_docs)]

use std::path::Path;
use std::process::{Command, Output};

use base64::Engine;
use serde_json::{Value, json};
use sidekey_testenv::{KubeApi, Moto, OpenBao};

/// Tricky values: a trailing newline, quotes, `$`, non-ASCII, a PEM-like
/// multi-line block, JSON in a value.
fn values() -> Vec<(&'static str, &'static str)> {
    vec![
        ("password", "e2e-pässwörd \"q\" $HOME\n"),
        ("username", "e2e-user-7f3a"),
        ("tls.key", "-----BEGIN PRIVATE KEY-----\ne2e-MIIEvQIBADANBgkqhkiG9w0\n-----END PRIVATE KEY-----\n"),
        ("config.json", "{\"e2e-token\": \"tok-91b2\", \"n\": 1}"),
    ]
}

fn secret_manifest() -> String {
    let data: serde_json::Map<String, Value> = values()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), json!(base64::engine::general_purpose::STANDARD.encode(v))))
        .collect();
    let s = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"}, "type": "Opaque", "data": data});
    sidekey::yaml::to_yaml(&s)
}

const DEPLOYMENT: &str = "# the shop's API: reads its database password from a Kubernetes Secret
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: shop
spec:
  selector:
    matchLabels:
      app: api
  template:
    metadata:
      labels:
        app: api # kept
    spec:
      securityContext:
        fsGroup: 2000
      containers:
        - name: api
          image: registry.example/api:1.4.2
          env:
            - name: DB_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: db
                  key: password
          envFrom:
            - secretRef:
                name: db
";

fn sidekey(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_e2e-sidekey"));
    cmd.args(args).env_clear().env("PATH", std::env::var("PATH").unwrap_or_default()).envs(env.iter().copied());
    sidekey_testenv::output_with_stdin(&mut cmd, stdin.unwrap_or(""))
}

/// Every output seen, for the value scan at the end.
#[derive(Default)]
struct Outputs(String);

impl Outputs {
    fn run(&mut self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> (i32, String, String) {
        let out = sidekey(args, env, stdin);
        let (o, e) =
            (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
        self.0.push_str(&o);
        self.0.push_str(&e);
        (out.status.code().unwrap_or(-1), o, e)
    }

    fn assert_no_value(&self) {
        for (k, v) in values() {
            for line in v.lines().filter(|l| l.len() > 8) {
                assert!(!self.0.contains(line), "the value of {k} appears in an output:\n{}", self.0);
            }
        }
    }
}

/// The agent's config from the Deployment `sidekey inject` made, adapted:
/// files under `root`, and `adapt` for the backend's address and auth.
fn agent_config(injected: &str, root: &Path, adapt: impl FnOnce(&mut Value)) -> String {
    let docs = sidekey::yaml::parse_documents(injected).unwrap();
    let deploy = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let agent = deploy["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sidekey-agent")
        .unwrap();
    let text = agent["env"].as_array().unwrap().iter().find(|e| e["name"] == "SIDEKEY_CONFIG").unwrap()["value"]
        .as_str()
        .unwrap();
    let mut cfg: Value = serde_json::from_str(text).unwrap();
    cfg["mountPath"] = json!(root.join("secrets"));
    std::fs::create_dir_all(root.join("secrets")).unwrap();
    adapt(&mut cfg);
    let path = root.join("agent.json");
    std::fs::write(&path, cfg.to_string()).unwrap();
    path.display().to_string()
}

/// Runs the agent once; returns its log.
fn agent_once(config: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_e2e-agent"))
        .args(["run", "--once", "--config", config])
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "agent: {log}");
    log
}

/// The files are the Secret's bytes: the `secretKeyRef` one, and one per
/// key in the `envFrom` directory.
fn assert_files_are_the_secret(root: &Path) {
    let secrets = root.join("secrets");
    let password_file = std::fs::read_dir(&secrets)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("db-password-"))
        .unwrap_or_else(|| panic!("no db-password file in {}", secrets.display()));
    let want: std::collections::BTreeMap<&str, &str> = values().into_iter().collect();
    assert_eq!(std::fs::read(secrets.join(password_file)).unwrap(), want["password"].as_bytes());
    for (k, v) in &want {
        assert_eq!(std::fs::read(secrets.join("db").join(k)).unwrap(), v.as_bytes(), "key {k}");
    }
}

#[test]
fn audit_cluster_then_push_from_the_cluster_to_openbao_renders_the_same_bytes() {
    let kube = KubeApi::start();
    let bao = OpenBao::start();
    let dir = tempfile::tempdir().unwrap();
    kube.create_namespace("shop", &[]);
    let out = kube.kubectl_stdin(&["apply", "-f", "-"], &format!("{}---\n{DEPLOYMENT}", secret_manifest()));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let kubeconfig = kube.kubeconfig.display().to_string();
    let deploy = dir.path().join("deploy.yaml");
    std::fs::write(&deploy, DEPLOYMENT).unwrap();
    let deploy = deploy.display().to_string();
    let env =
        [("KUBECONFIG", kubeconfig.as_str()), ("VAULT_ADDR", bao.addr.as_str()), ("VAULT_TOKEN", bao.token.as_str())];
    let mut outputs = Outputs::default();

    // audit --cluster: the stored Deployment's env-var secrets and the namespace without a default-deny policy.
    let (code, out, err) = outputs.run(&["audit", "--cluster", "--format", "json"], &env, None);
    assert_eq!(code, 0, "{err}");
    let findings: Vec<Value> = serde_json::from_str(&out).unwrap();
    let has = |rule: &str, object: &str| findings.iter().any(|f| f["rule"] == rule && f["object"] == object);
    assert!(has("SK001", "Deployment shop/api"), "{out}");
    assert!(has("SK002", "Deployment shop/api"), "{out}");
    assert!(has("SK201", "Namespace shop"), "{out}");
    assert!(findings.iter().all(|f| f["file"] == "cluster"), "{out}");
    let (code, _, _) = outputs.run(&["audit", "--cluster", "-n", "shop", "--fail-on", "medium"], &env, None);
    assert_eq!(code, 1, "--fail-on medium with medium findings");
    // A default-deny NetworkPolicy in the cluster answers SK201.
    let deny = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny", "namespace": "shop"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}});
    assert!(kube.kubectl_stdin(&["apply", "-f", "-"], &deny.to_string()).status.success());
    let (code, out, err) = outputs.run(&["audit", "--cluster", "-n", "shop", "--format", "json"], &env, None);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("SK201") && out.contains("SK001"), "{out}");
    // No cluster: a clear error, exit 69.
    let (code, _, err) = outputs.run(&["audit", "--cluster"], &[("KUBECONFIG", "/nonexistent")], None);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("cannot reach the cluster"), "{err}");

    // --dry-run: keys and the manifest diff; nothing written anywhere.
    let to = "vault:secret/data/{namespace}/{secret}";
    let (code, out, err) = outputs.run(
        &["migrate", "-f", &deploy, "--to", to, "--push", "--cluster", "-n", "shop", "--dry-run"],
        &env,
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("vault:secret/data/shop/db: would create with keys config.json, password, tls.key, username"),
        "{err}"
    );
    assert!(out.contains("+        sidekey.dev/map-db: vault:secret/data/shop/db\n"), "{out}");
    assert!(out.contains("+++ ") && out.contains(" app: api # kept\n"), "{out}");
    assert!(bao.api("GET", "secret/data/shop/db", None).is_err(), "dry run wrote to OpenBao");
    assert_eq!(std::fs::read_to_string(&deploy).unwrap(), DEPLOYMENT);

    // --push: the values move; the manifest is rewritten in place.
    let (code, _, err) = outputs.run(
        &["migrate", "-f", &deploy, "--to", to, "--push", "--cluster", "-n", "shop", "--in-place"],
        &env,
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("vault:secret/data/shop/db: written"), "{err}");
    let stored = bao.kv_get("shop/db");
    for (k, v) in values() {
        assert_eq!(stored[k], v, "key {k}");
    }
    // Again: nothing to write (no new KV version).
    let (code, _, err) =
        outputs.run(&["migrate", "-f", &deploy, "--to", to, "--push", "--cluster", "-n", "shop"], &env, None);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("vault:secret/data/shop/db: unchanged"), "{err}");
    assert_eq!(bao.api("GET", "secret/metadata/shop/db", None).unwrap()["data"]["current_version"], 1);

    // The value changed in the store: refused without --overwrite, nothing written.
    bao.kv_put("shop/db", json!({"password": "e2e-changed-elsewhere"}));
    let (code, _, err) =
        outputs.run(&["migrate", "-f", &deploy, "--to", to, "--push", "--cluster", "-n", "shop"], &env, None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("update (+config.json +tls.key +username ~password)") && err.contains("--overwrite"), "{err}");
    assert_eq!(bao.api("GET", "secret/metadata/shop/db", None).unwrap()["data"]["current_version"], 2);
    let (code, _, err) = outputs.run(
        &["migrate", "-f", &deploy, "--to", to, "--push", "--cluster", "-n", "shop", "--overwrite"],
        &env,
        None,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(bao.kv_get("shop/db")["password"], values()[0].1);

    // A KV v1 mount is written as is; a mount that is not KV is refused, naming it.
    let original = dir.path().join("original.yaml");
    std::fs::write(&original, DEPLOYMENT).unwrap();
    let original = original.display().to_string();
    bao.api("POST", "sys/mounts/kv1", Some(json!({"type": "kv", "options": {"version": "1"}}))).unwrap();
    let v1 = "vault:kv1/{namespace}/{secret}";
    let (code, _, err) =
        outputs.run(&["migrate", "-f", &original, "--to", v1, "--push", "--cluster", "-n", "shop"], &env, None);
    assert_eq!(code, 0, "{err}");
    let stored = bao.api("GET", "kv1/shop/db", None).unwrap();
    for (k, v) in values() {
        assert_eq!(stored["data"][k], v, "key {k}");
    }
    let (code, _, err) =
        outputs.run(&["migrate", "-f", &original, "--to", v1, "--push", "--cluster", "-n", "shop"], &env, None);
    assert!(code == 0 && err.contains("vault:kv1/shop/db: unchanged"), "{err}");
    let cubby = "vault:cubbyhole/{namespace}/{secret}";
    let (code, _, err) =
        outputs.run(&["migrate", "-f", &original, "--to", cubby, "--push", "--cluster", "-n", "shop"], &env, None);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("is on a cubbyhole mount") && err.contains("not KV"), "{err}");

    // inject, then the agent with the injected config renders the Secret's bytes.
    let (code, injected, err) = outputs.run(&["inject", "-f", &deploy], &env, None);
    assert_eq!(code, 0, "{err}");
    let config = agent_config(&injected, dir.path(), |cfg| {
        let token = dir.path().join("vault-token");
        std::fs::write(&token, &bao.token).unwrap();
        cfg["vault"]["addr"] = json!(bao.addr);
        cfg["vault"]["auth"] = json!({"method": "token", "tokenPath": token});
    });
    outputs.0.push_str(&agent_once(&config, &[]));
    assert_files_are_the_secret(dir.path());
    outputs.assert_no_value();
}

/// Writes to several references are not one transaction: when one is
/// refused, the report names exactly what was written and what was not,
/// and a second run finishes the job without rewriting the first.
#[test]
fn push_stops_at_a_refused_write_and_says_what_was_written() {
    let bao = OpenBao::start();
    let policy = "path \"secret/data/shop/*\" { capabilities = [\"read\", \"create\", \"update\"] }\n\
                  path \"secret/data/web/*\" { capabilities = [\"read\"] }\n\
                  path \"sys/internal/ui/mounts/*\" { capabilities = [\"read\"] }\n";
    bao.api("POST", "sys/policies/acl/push-shop-only", Some(json!({"policy": policy}))).unwrap();
    let token = bao.api("POST", "auth/token/create", Some(json!({"policies": ["push-shop-only"]}))).unwrap()["auth"]
        ["client_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let web = format!("{}---\n{DEPLOYMENT}", secret_manifest()).replace("namespace: shop", "namespace: web");
    let input = format!("{}---\n{DEPLOYMENT}---\n{web}", secret_manifest());
    let to = "vault:secret/data/{namespace}/{secret}";
    let mut outputs = Outputs::default();
    let env = [("VAULT_ADDR", bao.addr.as_str()), ("VAULT_TOKEN", token.as_str())];
    let (code, _, err) = outputs.run(&["migrate", "-f", "-", "--to", to, "--push"], &env, Some(&input));
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("push: vault:secret/data/shop/db: written"), "{err}");
    assert!(
        err.contains(
            "push: stopped: written (and kept): vault:secret/data/shop/db; not written: vault:secret/data/web/db"
        ),
        "{err}"
    );
    assert_eq!(bao.kv_get("shop/db")["password"], values()[0].1);
    assert!(bao.api("GET", "secret/data/web/db", None).is_err(), "web/db was written");
    // With a token that may write both: shop is unchanged, web is written.
    let env = [("VAULT_ADDR", bao.addr.as_str()), ("VAULT_TOKEN", bao.token.as_str())];
    let (code, _, err) = outputs.run(&["migrate", "-f", "-", "--to", to, "--push"], &env, Some(&input));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("vault:secret/data/shop/db: unchanged") && err.contains("vault:secret/data/web/db: written"),
        "{err}"
    );
    assert_eq!(bao.api("GET", "secret/metadata/shop/db", None).unwrap()["data"]["current_version"], 1);
    outputs.assert_no_value();
}

#[test]
fn push_from_manifests_to_secrets_manager_renders_the_same_bytes() {
    let moto = Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let manifests = dir.path().join("k8s");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::write(manifests.join("secret.yaml"), secret_manifest()).unwrap();
    std::fs::write(manifests.join("deploy.yaml"), DEPLOYMENT).unwrap();
    let m = manifests.display().to_string();
    let aws = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", moto.region.as_str()),
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
    ];
    let mut outputs = Outputs::default();
    let to = "aws-sm:{namespace}/{secret}";

    let (code, out, err) = outputs.run(&["migrate", "-f", &m, "--to", to, "--push", "--dry-run"], &aws, None);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("aws-sm:shop/db: would create with keys config.json, password, tls.key, username"), "{err}");
    assert!(out.contains("+        sidekey.dev/map-db: aws-sm:shop/db\n"), "{out}");
    assert!(moto.secretsmanager("DescribeSecret", json!({"SecretId": "shop/db"})).is_err(), "dry run created it");

    let (code, migrated, err) = outputs.run(&["migrate", "-f", &m, "--to", to, "--push"], &aws, None);
    assert_eq!(code, 0, "{err}");
    let got = moto.secretsmanager("GetSecretValue", json!({"SecretId": "shop/db"})).unwrap();
    let stored: Value = serde_json::from_str(got["SecretString"].as_str().unwrap()).unwrap();
    for (k, v) in values() {
        assert_eq!(stored[k], v, "key {k}");
    }
    let before = moto.request_counts();
    let (code, _, err) = outputs.run(&["migrate", "-f", &m, "--to", to, "--push"], &aws, None);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("aws-sm:shop/db: unchanged"), "{err}");
    let after = moto.request_counts();
    for write in ["CreateSecret", "PutSecretValue"] {
        assert_eq!(before.get(write), after.get(write), "{write} on an unchanged run");
    }

    // Changed in the store: refused (keys only) until --overwrite, which puts a new version.
    moto.put_secret_value("shop/db", &json!({"password": "e2e-changed-in-aws"}).to_string());
    let (code, _, err) = outputs.run(&["migrate", "-f", &m, "--to", to, "--push"], &aws, None);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("aws-sm:shop/db: differs from the Secret: update (+config.json +tls.key +username ~password)"),
        "{err}"
    );
    let puts = moto.request_counts().get("PutSecretValue").copied().unwrap_or(0);
    let (code, _, err) = outputs.run(&["migrate", "-f", &m, "--to", to, "--push", "--overwrite"], &aws, None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(moto.request_counts().get("PutSecretValue").copied().unwrap_or(0), puts + 1);
    let got = moto.secretsmanager("GetSecretValue", json!({"SecretId": "shop/db"})).unwrap();
    let stored: Value = serde_json::from_str(got["SecretString"].as_str().unwrap()).unwrap();
    assert_eq!(stored["password"], values()[0].1);

    // A binary value is refused by key, and nothing is written.
    let binary = secret_manifest().replace("  username: ", "  blob: //79\n  username: ");
    std::fs::write(manifests.join("secret.yaml"), binary).unwrap();
    let (code, _, err) = outputs.run(&["migrate", "-f", &m, "--to", to, "--push"], &aws, None);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Secret shop/db: the value of key \"blob\" is binary"), "{err}");
    std::fs::write(manifests.join("secret.yaml"), secret_manifest()).unwrap();

    // The migrated output, injected: the agent renders the Secret's bytes from Secrets Manager.
    let (code, injected, err) = outputs.run(&["inject", "-f", "-"], &aws, Some(&migrated));
    assert_eq!(code, 0, "{err}");
    let config = agent_config(&injected, dir.path(), |cfg| {
        cfg["aws"] = json!({"region": moto.region, "endpoint": moto.endpoint});
    });
    outputs.0.push_str(&agent_once(&config, &aws[..2]));
    assert_files_are_the_secret(dir.path());
    outputs.assert_no_value();
}

/// `audit --cluster` on pods stored in a real kube-apiserver: a pod that
/// opted in but was created while no webhook injected it (SK007), and an
/// injected pod whose agent reports not ready (SK008, its status written
/// through the status subresource as a kubelet would).
#[test]
fn audit_cluster_finds_pods_that_missed_injection_and_agents_that_are_not_ready() {
    let kube = KubeApi::start();
    kube.create_namespace("shop", &[]);
    kube.create_service_account("shop", "default");
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "shop", "annotations": {"sidekey.dev/inject": "true"}},
               "spec": {"containers": [{"name": "app", "image": "registry.example/app@sha256:1",
                        "env": [{"name": "API_KEY", "value": "vault:secret/data/shop/api#key"}]}]}})
        .to_string()
    };
    // No webhook is registered: the apiserver stores the pod as it came.
    let out = kube.kubectl_stdin(&["apply", "-f", "-"], &pod("bypassed"));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // An injected pod (what the webhook would have stored), its agent failing.
    let injected = sidekey(&["inject", "-f", "-", "-q"], &[], Some(&pod("injected")));
    assert!(injected.status.success(), "{}", String::from_utf8_lossy(&injected.stderr));
    let out = kube.kubectl_stdin(&["apply", "-f", "-"], &String::from_utf8_lossy(&injected.stdout));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status = json!({"status": {"phase": "Running", "initContainerStatuses": [{
        "name": "sidekey-agent", "image": "agent", "imageID": "", "ready": false, "restartCount": 4,
        "started": false, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
    kube.kubectl_ok(&[
        "-n",
        "shop",
        "patch",
        "pod",
        "injected",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ]);
    let kubeconfig = kube.kubeconfig.display().to_string();
    let out = sidekey(&["audit", "--cluster", "-n", "shop", "--format", "json"], &[("KUBECONFIG", &kubeconfig)], None);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let findings: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let rules_of = |object: &str| -> Vec<&str> {
        let mut r: Vec<&str> = findings
            .iter()
            .filter(|f| f["object"] == object)
            .filter_map(|f| f["rule"].as_str())
            .filter(|r| ["SK007", "SK008"].contains(r))
            .collect();
        r.dedup();
        r
    };
    assert_eq!(rules_of("Pod shop/bypassed"), ["SK007"], "{findings:?}");
    assert_eq!(rules_of("Pod shop/injected"), ["SK008"], "{findings:?}");
    let (code, _, _) = Outputs::default().run(
        &["audit", "--cluster", "-n", "shop", "--fail-on", "high"],
        &[("KUBECONFIG", &kubeconfig)],
        None,
    );
    assert_eq!(code, 1, "a missed injection fails --fail-on high");
}
