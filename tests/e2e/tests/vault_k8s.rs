//! Compatibility with the Vault Agent injector, proven against the real
//! thing. Every workload of `tests/data/vault-k8s/` (vault-k8s's docs and
//! workloads from public repositories, each naming its source) goes
//! through sidekey's injector in compatibility mode and its agent, and
//! through `bao agent` configured as vault-k8s configures Vault Agent —
//! against one OpenBao with the same data. Every file must be the same
//! bytes; a workload sidekey refuses must be refused naming the
//! annotation its header says.
//!
//! The Vault Agent side is written here from vault-k8s's own rules
//! (`agent-inject/agent/agent.go` `secrets()`, `config.go`
//! `newTemplateConfigs()`), not from `sidekey::vault_k8s`, so the two
//! translations check each other.

#![allow(clippy::unwrap_used, clippy::disallowed_methods, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use sidekey_testenv::{KubeApi, OpenBao, tool};

mod common;
use common::{injector, pod_of, spawn};

const PREFIX: &str = "vault.hashicorp.com/";

/// One workload of the corpus.
struct Workload {
    /// The file name without `.yaml`.
    name: String,
    /// The file's text.
    text: String,
    /// The pod (a workload's template made a Pod).
    pod: Value,
    /// `None`: rendered; `Some(key)`: refused naming `key`.
    refused: Option<String>,
}

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/vault-k8s")
}

fn corpus() -> Vec<Workload> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let header =
                |key: &str| text.lines().find_map(|l| l.strip_prefix(&format!("# {key}: ")).map(str::to_owned));
            assert!(header("source").is_some_and(|s| s.starts_with("https://")), "{name}: no # source:");
            assert!(header("changes").is_some(), "{name}: no # changes:");
            let expect = header("expect").unwrap_or_else(|| panic!("{name}: no # expect:"));
            let refused = match expect.split_once(' ') {
                Some(("refused", key)) => Some(key.to_owned()),
                None if expect == "rendered" => None,
                _ => panic!("{name}: # expect: rendered | refused <annotation>"),
            };
            let pod = pod_of(&text, &name);
            Workload { name, text, pod, refused }
        })
        .collect()
}

/// The mounts and secrets of `seed.json`.
fn seed(bao: &OpenBao) {
    let seed: Value = serde_json::from_str(&std::fs::read_to_string(corpus_dir().join("seed.json")).unwrap()).unwrap();
    let mut kv2 = vec!["secret".to_owned()];
    for (mount, kind) in seed["mounts"].as_object().unwrap() {
        let (kind, version) = match kind.as_str().unwrap() {
            "kv-v2" => ("kv", "2"),
            other => (other, "1"),
        };
        bao.api("POST", &format!("sys/mounts/{mount}"), Some(json!({"type": kind, "options": {"version": version}})))
            .unwrap();
        if version == "2" {
            kv2.push(mount.clone());
        }
    }
    // A PKI engine with a root CA and a role, for templates that issue.
    let pki = &seed["pki"];
    let mount = pki["mount"].as_str().unwrap();
    bao.api(
        "POST",
        &format!("sys/mounts/{mount}"),
        Some(json!({"type": "pki", "config": {"max_lease_ttl": "87600h"}})),
    )
    .unwrap();
    bao.api(
        "POST",
        &format!("{mount}/root/generate/internal"),
        Some(json!({"common_name": "corpus root", "ttl": "8760h"})),
    )
    .unwrap();
    bao.api(
        "POST",
        &format!("{mount}/roles/{}", pki["role"].as_str().unwrap()),
        Some(json!({"allowed_domains": pki["allowed_domains"], "allow_subdomains": true, "max_ttl": "72h"})),
    )
    .unwrap();
    for (path, data) in seed["secrets"].as_object().unwrap() {
        let (mount, rest) = path.split_once('/').unwrap();
        let (api, body) = if kv2.iter().any(|m| m == mount) {
            (format!("{mount}/data/{rest}"), json!({ "data": data }))
        } else {
            (path.clone(), data.clone())
        };
        bao.api("POST", &api, Some(body)).unwrap();
    }
}

/// One `template` stanza vault-k8s would write for the pod.
struct Stanza {
    file: String,
    contents: String,
    left: String,
    right: String,
    error_on_missing_key: bool,
    perms: Option<String>,
}

/// vault-k8s's reading of the annotations: a secret is named by
/// `agent-inject-secret-<raw>` or `agent-inject-template-<raw>`, its file
/// is `agent-inject-file-<raw>` or the name (lower-cased unless
/// `preserve-secret-case`), its template the given one or the default.
fn vault_k8s_stanzas(annotations: &serde_json::Map<String, Value>) -> Vec<Stanza> {
    let get = |k: &str| annotations.get(&format!("{PREFIX}{k}")).and_then(Value::as_str);
    let truthy = |v: Option<&str>| v.is_some_and(|v| matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True"));
    let mut raws: Vec<String> = Vec::new();
    for k in annotations.keys() {
        for prefix in ["agent-inject-secret-", "agent-inject-template-"] {
            if let Some(raw) = k.strip_prefix(&format!("{PREFIX}{prefix}"))
                && !raws.iter().any(|r| r == raw)
            {
                raws.push(raw.to_owned());
            }
        }
    }
    raws.into_iter()
        .map(|raw| {
            let preserve = truthy(get(&format!("preserve-secret-case-{raw}")).or(get("preserve-secret-case")));
            let name = if preserve { raw.clone() } else { raw.to_lowercase() };
            let path = get(&format!("agent-inject-secret-{raw}")).unwrap_or("");
            let contents = match get(&format!("agent-inject-template-{raw}")) {
                Some(t) => t.to_owned(),
                None if get("agent-inject-default-template") == Some("json") => {
                    format!("{{{{ with secret \"{path}\" }}}}{{{{ .Data | toJSON }}}}\n{{{{ end }}}}")
                }
                None => format!(
                    "{{{{ with secret \"{path}\" }}}}{{{{ range $k, $v := .Data }}}}{{{{ $k }}}}: {{{{ $v }}}}\n{{{{ end }}}}{{{{ end }}}}"
                ),
            };
            Stanza {
                file: get(&format!("agent-inject-file-{raw}")).map_or(name, str::to_owned),
                contents,
                left: get(&format!("agent-template-left-delim-{raw}")).unwrap_or("{{").to_owned(),
                right: get(&format!("agent-template-right-delim-{raw}")).unwrap_or("}}").to_owned(),
                error_on_missing_key: truthy(get(&format!("error-on-missing-key-{raw}"))),
                perms: get(&format!("agent-inject-perms-{raw}")).map(str::to_owned),
            }
        })
        .collect()
}

/// Runs `bao agent` once (exit_after_auth) with a token, rendering every
/// stanza of every workload into `out/<workload>/<file>`.
fn run_vault_agent(bao: &OpenBao, dir: &Path, out: &Path, workloads: &[(&str, Vec<Stanza>)]) {
    let token = dir.join("bao-token");
    std::fs::write(&token, &bao.token).unwrap();
    let mut hcl = format!(
        "vault {{\n  address = \"{}\"\n}}\nexit_after_auth = true\nauto_auth {{\n  method \"token_file\" {{\n    config = {{\n      token_file_path = \"{}\"\n    }}\n  }}\n}}\n",
        bao.addr,
        token.display()
    );
    for (workload, stanzas) in workloads {
        std::fs::create_dir_all(out.join(workload)).unwrap();
        for s in stanzas {
            hcl.push_str(&format!(
                "template {{\n  contents = {}\n  destination = {}\n  left_delimiter = {}\n  right_delimiter = {}\n  error_on_missing_key = {}\n}}\n",
                serde_json::to_string(&s.contents).unwrap(),
                serde_json::to_string(&out.join(workload).join(&s.file)).unwrap(),
                serde_json::to_string(&s.left).unwrap(),
                serde_json::to_string(&s.right).unwrap(),
                s.error_on_missing_key,
            ));
        }
    }
    std::fs::write(dir.join("agent.hcl"), &hcl).unwrap();
    // Vault Agent retries a template it cannot render for ever: bounded here.
    let log = dir.join("bao-agent.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(tool("SIDEKEY_BAO"))
        .args(["agent", &format!("-config={}", dir.join("agent.hcl").display())])
        .env("HOME", dir)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.is_some_and(|s| s.success()),
        "bao agent did not render every template within 60 s: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// The injector's answer for `pod` in compatibility mode: the injected pod,
/// or the denial's message.
fn inject(pod: &Value, config: &sidekey::config::InjectorConfig) -> Result<Value, String> {
    let body = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
                    "namespace": "apps", "object": pod}
    }))
    .unwrap();
    let reply = sidekey_injector::review::review(&body, config);
    let answer: Value = serde_json::from_slice(&reply.body).unwrap();
    let response = &answer["response"];
    if response["allowed"] != true {
        return Err(response["status"]["message"].as_str().unwrap_or_default().to_owned());
    }
    use base64::Engine;
    let patch = base64::engine::general_purpose::STANDARD.decode(response["patch"].as_str().unwrap()).unwrap();
    let patch: sidekey::patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut out = pod.clone();
    sidekey::patch::apply(&mut out, &patch).unwrap();
    Ok(out)
}

/// The agent's args and env from the injected pod; its mount path moved to
/// `secrets`, and with `token` its login replaced by that token.
fn agent_of(pod: &Value, secrets: &Path, token: Option<&Path>) -> (Vec<String>, Vec<(String, String)>) {
    let agent = pod["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sidekey-agent")
        .expect("the agent container");
    let mut args: Vec<String> =
        agent["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
    if !args.iter().any(|a| a == "--once") {
        args.push("--once".into());
    }
    let mut env = Vec::new();
    for e in agent["env"].as_array().unwrap() {
        let Some(value) = e["value"].as_str() else { continue };
        let mut value = value.to_owned();
        if e["name"] == "SIDEKEY_CONFIG" {
            let mut cfg: Value = serde_json::from_str(&value).unwrap();
            cfg["mountPath"] = json!(secrets);
            if let Some(t) = token {
                cfg["vault"]["auth"] = json!({"method": "token", "tokenPath": t});
            }
            value = cfg.to_string();
        }
        env.push((e["name"].as_str().unwrap().to_owned(), value));
    }
    std::fs::create_dir_all(secrets).unwrap();
    (args, env)
}

/// Runs the agent to the end (`--once`); it must succeed.
fn run_agent(args: &[String], env: &[(String, String)], log: &Path) {
    let mut agent = spawn(env!("CARGO_BIN_EXE_e2e-agent"), args, env, log);
    let status = agent.0.wait().unwrap();
    assert!(status.success(), "sidekey-agent: {}", agent.log());
}

/// The files of a directory (the agent's `..data` entries left out).
fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") {
            out.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

/// The injector as a platform team would configure it for these workloads:
/// the corpus's PKI template writes (issues certificates), which the
/// namespace policy must name.
fn injector_config(bao: &OpenBao, compat: bool) -> sidekey::config::InjectorConfig {
    sidekey::config::InjectorConfig::from_yaml(&format!(
        "vault:\n  addr: {}\n  allowHttp: true\ncompatibility:\n  vaultK8s: {compat}\npolicy:\n  rules:\n    - namespaces: [\"*\"]\n      writes: [\"vault:pki/issue/web\"]\n",
        bao.addr
    ))
    .unwrap()
}

#[test]
fn every_corpus_workload_renders_the_files_vault_agent_renders() {
    let bao = OpenBao::start();
    seed(&bao);
    let dir = tempfile::tempdir().unwrap();
    let corpus = corpus();
    assert!(corpus.len() >= 20, "the corpus has {} workloads", corpus.len());
    let config = injector_config(&bao, true);
    let plain = injector_config(&bao, false);
    let token = dir.path().join("sidekey-token");
    std::fs::write(&token, &bao.token).unwrap();

    let mut expected = Vec::new();
    let mut rendered = 0;
    for w in &corpus {
        let result = inject(&w.pod, &config);
        match (&w.refused, result) {
            (Some(key), Err(message)) => {
                assert!(message.contains(key.as_str()), "{}: refused, but not naming {key}: {message}", w.name);
                // migrate --from vault-k8s leaves it as it is, saying why.
                let (text, report) = sidekey::vault_k8s::migrate::migrate(&w.text).unwrap();
                assert_eq!(text, w.text, "{}", w.name);
                assert!(report[0].refused.iter().any(|r| r.contains(key.as_str())), "{}: {report:?}", w.name);
                continue;
            }
            (Some(key), Ok(_)) => panic!("{}: injected, but the corpus says sidekey refuses {key}", w.name),
            (None, Err(message)) => panic!("{}: refused: {message}", w.name),
            (None, Ok(pod)) => {
                let a = &pod["metadata"]["annotations"];
                assert_eq!(a["vault.hashicorp.com/agent-inject-status"], "injected", "{}", w.name);
                let (args, env) = agent_of(&pod, &dir.path().join("sidekey").join(&w.name), Some(&token));
                run_agent(&args, &env, &dir.path().join(format!("{}.log", w.name)));
                rendered += 1;

                // migrate --from vault-k8s: the manifest, rewritten for good,
                // injected without the compatibility setting, renders the same.
                let (text, report) = sidekey::vault_k8s::migrate::migrate(&w.text).unwrap();
                assert!(report.iter().all(|m| m.refused.is_empty() && !m.reserialized), "{}: {report:?}", w.name);
                let migrated = pod_of(&text, &w.name);
                let annotations = migrated["metadata"]["annotations"].as_object().unwrap();
                assert!(!annotations.keys().any(|k| k.starts_with(PREFIX)), "{}: {text}", w.name);
                assert_eq!(migrated["metadata"]["labels"]["sidekey.dev/inject"], "true", "{}", w.name);
                let pod = inject(&migrated, &plain).unwrap_or_else(|e| panic!("{}: migrated: {e}", w.name));
                let (args, env) = agent_of(&pod, &dir.path().join("migrated").join(&w.name), Some(&token));
                run_agent(&args, &env, &dir.path().join(format!("{}.migrated.log", w.name)));
            }
        }
        let stanzas = vault_k8s_stanzas(w.pod["metadata"]["annotations"].as_object().unwrap());
        expected.push((w.name.as_str(), stanzas));
    }
    assert!(rendered >= 20, "only {rendered} workloads rendered");
    run_vault_agent(&bao, dir.path(), &dir.path().join("bao"), &expected);

    for (name, stanzas) in &expected {
        let theirs = files_of(&dir.path().join("bao").join(name));
        let ours = files_of(&dir.path().join("sidekey").join(name));
        let migrated = files_of(&dir.path().join("migrated").join(name));
        assert!(migrated == ours, "{name}: the migrated manifest renders other files");
        assert_eq!(
            ours.keys().collect::<Vec<_>>(),
            theirs.keys().collect::<Vec<_>>(),
            "{name}: sidekey and Vault Agent wrote different files"
        );
        for (file, bytes) in &theirs {
            assert!(
                ours[file] == *bytes,
                "{name}/{file}: sidekey and Vault Agent differ:\n--- vault agent\n{}\n--- sidekey\n{}",
                String::from_utf8_lossy(bytes),
                String::from_utf8_lossy(&ours[file])
            );
        }
        // A difference on purpose: without agent-inject-perms Vault Agent
        // writes 0644; sidekey's files are readable by the app and no one
        // else (docs/vault-k8s.md). With it, the mode is the one asked for.
        use std::os::unix::fs::PermissionsExt;
        for s in stanzas {
            let mode =
                std::fs::metadata(dir.path().join("sidekey").join(name).join(&s.file)).unwrap().permissions().mode()
                    & 0o777;
            match &s.perms {
                // Read bits as asked; write bits are dropped (the files are read-only).
                Some(p) => assert_eq!(mode, u32::from_str_radix(p, 8).unwrap() & 0o444, "{name}/{}", s.file),
                None => assert_eq!(mode & 0o022, 0, "{name}/{}: {mode:o} is writable by others", s.file),
            }
        }
    }
}

#[test]
fn a_vault_k8s_pod_is_injected_by_the_apiserver_and_logs_in_with_kubernetes_auth() {
    let kube = KubeApi::start();
    let bao = OpenBao::start();
    seed(&bao);
    let dir = tempfile::tempdir().unwrap();
    bao.put_policy("internal-app", "path \"internal/data/database/config\" { capabilities = [\"read\"] }\n");
    bao.enable_kubernetes_auth(&kube, "internal-app", "apps", "internal-app", "sidekey", &["internal-app"]);
    // The tutorial's app container is not restricted; sidekey's are (tested in e2e.rs).
    kube.create_namespace("apps", &["pod-security.kubernetes.io/enforce=baseline"]);
    kube.create_service_account("apps", "internal-app");
    let config = format!("vault:\n  addr: {}\n  allowHttp: true\ncompatibility:\n  vaultK8s: true\n", bao.addr);
    // Its webhook configuration has no objectSelector: vault-k8s pods carry no sidekey label.
    let _injector = injector(&kube, dir.path(), &config);

    // The tutorial's pod, as it is (namespace set for the test).
    let w = corpus().into_iter().find(|w| w.name == "06-katakoda-pod-payroll").unwrap();
    let mut pod = w.pod.clone();
    pod["metadata"]["namespace"] = json!("apps");
    let out = kube.kubectl_stdin(&["apply", "-f", "-"], &pod.to_string());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored: Value =
        serde_json::from_str(&kube.kubectl_ok(&["-n", "apps", "get", "pod", "payroll", "-o", "json"])).unwrap();
    let a = &stored["metadata"]["annotations"];
    assert_eq!(a["vault.hashicorp.com/agent-inject-status"], "injected");
    assert_eq!(a["sidekey.dev/status"], "injected");
    // Vault's address and the login come from the injector's config; the
    // role from the pod's annotation; the mount is vault-k8s's.
    let agent =
        stored["spec"]["initContainers"].as_array().unwrap().iter().find(|c| c["name"] == "sidekey-agent").unwrap();
    let app = stored["spec"]["containers"].as_array().unwrap().iter().find(|c| c["name"] == "payroll").unwrap();
    assert!(
        app["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/vault/secrets" && m["readOnly"] == true)
    );
    assert_eq!(agent["restartPolicy"], "Always");

    // The agent from the stored spec, logging in with a TokenRequest token
    // of the pod's service account (Kubernetes auth, TokenReview by OpenBao).
    let jwt = kube.token_request("apps", "internal-app", "sidekey");
    let jwt_file = dir.path().join("jwt");
    std::fs::write(&jwt_file, jwt).unwrap();
    let (args, mut env) = agent_of(&stored, &dir.path().join("secrets"), None);
    for (k, v) in &mut env {
        if k == "SIDEKEY_CONFIG" {
            let mut cfg: Value = serde_json::from_str(v).unwrap();
            assert_eq!(cfg["vault"]["auth"]["method"], "kubernetes");
            assert_eq!(cfg["vault"]["auth"]["role"], "internal-app");
            cfg["vault"]["auth"]["tokenPath"] = json!(jwt_file);
            *v = cfg.to_string();
        }
    }
    run_agent(&args, &env, &dir.path().join("agent.log"));
    let stanzas = vault_k8s_stanzas(w.pod["metadata"]["annotations"].as_object().unwrap());
    run_vault_agent(&bao, dir.path(), &dir.path().join("bao"), &[("payroll", stanzas)]);
    assert_eq!(files_of(&dir.path().join("secrets")), files_of(&dir.path().join("bao/payroll")));
    assert_eq!(
        String::from_utf8(files_of(&dir.path().join("secrets"))["database-config.txt"].clone()).unwrap(),
        "postgresql://db-readonly-username:db-secret-password@postgres:5432/wizard"
    );
}
