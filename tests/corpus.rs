//! `sidekey inject` over the shared example corpus, through the real binary:
//! valid files inject, validate against the Kubernetes 1.34 schemas
//! (`kubernetes-validate --strict`) and are idempotent; invalid files are
//! refused with nothing on stdout and an error naming the offending key.

#![allow(clippy::unwrap_used, clippy::print_stdout, missing_docs)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use sidekey::pss;
use sidekey::reference::is_env_reference;
use sidekey::workload::template_pointer;
use sidekey::yaml;

fn inject_file(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sidekey")).arg("inject").arg("-f").arg(path).output().unwrap()
}

fn inject_stdin(input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sidekey"))
        .args(["inject", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Every object, with List items flattened (kubernetes-validate checks items
/// one by one).
fn objects(docs: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for d in docs {
        if d["kind"] == "List" {
            out.extend(d["items"].as_array().unwrap().iter().cloned());
        } else {
            out.push(d.clone());
        }
    }
    out
}

fn template(obj: &Value) -> Option<&Value> {
    let p = template_pointer(obj["apiVersion"].as_str()?, obj["kind"].as_str()?)?;
    obj.pointer(p)
}

fn containers(spec: &Value, key: &str) -> Vec<Value> {
    spec[key].as_array().cloned().unwrap_or_default()
}

fn names(spec: &Value, key: &str) -> Vec<String> {
    containers(spec, key).iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
}

fn opted_in(t: &Value) -> bool {
    let a = &t["metadata"]["annotations"];
    a["sidekey.dev/inject"] == "true" && a.get("sidekey.dev/status").is_none()
}

fn find<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no container {name}"))
}

/// The README's contract for one injected pod template.
fn check_injected(file: &str, before: &Value, after: &Value) {
    let ctx = |what: &str| format!("{file}: {what}");
    let (bm, am) = (&before["metadata"], &after["metadata"]);
    assert_eq!(am["annotations"]["sidekey.dev/status"], "injected", "{}", ctx("status"));
    for key in ["labels", "annotations"] {
        for (k, v) in bm[key].as_object().into_iter().flatten() {
            assert_eq!(&am[key][k], v, "{}", ctx(&format!("{key} {k} kept")));
        }
    }
    let (bs, s) = (&before["spec"], &after["spec"]);
    // Pod-level fields: nothing existing changes.
    for (k, v) in bs.as_object().unwrap() {
        if !["containers", "initContainers", "volumes"].contains(&k.as_str()) {
            assert_eq!(&s[k], v, "{}", ctx(&format!("spec.{k} unchanged")));
        }
    }
    // Existing volumes kept in order, ours added.
    let bv = bs["volumes"].as_array().cloned().unwrap_or_default();
    let av = s["volumes"].as_array().unwrap();
    assert_eq!(&av[..bv.len()], bv.as_slice(), "{}", ctx("volumes kept"));
    let vol = av.iter().find(|v| v["name"] == "sidekey-secrets").expect("secrets volume");
    assert_eq!(vol["emptyDir"]["medium"], "Memory");
    assert!(vol["emptyDir"]["sizeLimit"].is_string(), "{}", ctx("sizeLimit"));

    let ann = &bm["annotations"];
    let lifecycle = ann["sidekey.dev/lifecycle"].as_str().unwrap_or("sidecar");
    let mount = ann["sidekey.dev/mount-path"].as_str().unwrap_or("/run/secrets/sidekey");
    let inits = containers(s, "initContainers");
    let regular = containers(s, "containers");
    let agent_like: Vec<&Value> =
        inits.iter().chain(regular.iter()).filter(|c| c["name"].as_str().unwrap().starts_with("sidekey-")).collect();
    let agent_init_name = if lifecycle == "legacy" { "sidekey-init" } else { "sidekey-agent" };
    let agent_at = inits.iter().position(|c| c["name"] == agent_init_name).expect("agent init container");
    let agent = &inits[agent_at];
    match lifecycle {
        "sidecar" => {
            assert_eq!(agent["restartPolicy"], "Always", "{}", ctx("native sidecar"));
            assert!(agent.get("startupProbe").is_some(), "{}", ctx("startup probe"));
        }
        "init-only" => assert!(agent.get("restartPolicy").is_none(), "{}", ctx("plain init")),
        "legacy" => {
            assert!(agent.get("restartPolicy").is_none());
            let regular_agent = find(&regular, "sidekey-agent");
            assert!(regular_agent.get("restartPolicy").is_none());
        }
        other => panic!("unknown lifecycle {other}"),
    }
    // Order: after leading native sidecars, before every other init container.
    let selected: Vec<String> = match ann["sidekey.dev/containers"].as_str() {
        Some(list) => list.split(',').map(|s| s.trim().to_owned()).collect(),
        None => names(bs, "containers"),
    };
    for (i, c) in inits.iter().enumerate() {
        let n = c["name"].as_str().unwrap();
        if n.starts_with("sidekey-") {
            continue;
        }
        let native = c["restartPolicy"] == "Always" && !selected.contains(&n.to_owned());
        if i < agent_at {
            assert!(native, "{}", ctx(&format!("{n} before the agent must be a native sidecar")));
        }
    }
    // Every container we add: restricted on its own terms, resources, ro root.
    for c in &agent_like {
        let v = pss::check_container(c, None);
        assert!(v.is_empty(), "{}: {v:?}", ctx(&format!("{} restricted", c["name"])));
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        for k in ["requests", "limits"] {
            for r in ["cpu", "memory"] {
                assert!(c["resources"][k][r].is_string(), "{}", ctx(&format!("{} {k}.{r}", c["name"])));
            }
        }
    }
    let agent_env = agent["env"].as_array().unwrap();
    let config = agent_env.iter().find(|e| e["name"] == "SIDEKEY_CONFIG").expect("config env");
    let config = sidekey::agent_config::AgentConfig::from_json(config["value"].as_str().unwrap()).unwrap();
    assert_eq!(config.mount_path, mount);
    // Agent resources: the annotations win.
    for (a, path) in [
        ("agent-cpu-request", "/resources/requests/cpu"),
        ("agent-cpu-limit", "/resources/limits/cpu"),
        ("agent-memory-request", "/resources/requests/memory"),
        ("agent-memory-limit", "/resources/limits/memory"),
    ] {
        if let Some(v) = ann[format!("sidekey.dev/{a}")].as_str() {
            assert_eq!(agent.pointer(path).unwrap(), v, "{}", ctx(a));
        }
    }
    // The token: only the agent mounts it, and only with Vault.
    let token_mounted =
        |c: &Value| c["volumeMounts"].as_array().into_iter().flatten().any(|m| m["name"] == "sidekey-token");
    assert_eq!(token_mounted(agent), config.vault.is_some(), "{}", ctx("token mount"));
    // App containers: selected ones mount read-only, others not at all.
    let env_mode = ann["sidekey.dev/env"].as_str().unwrap_or("file");
    for (key, list) in [("initContainers", &inits), ("containers", &regular)] {
        for c in list.iter() {
            let n = c["name"].as_str().unwrap();
            if n.starts_with("sidekey-") {
                continue;
            }
            let orig = find(&containers(bs, key), n).clone();
            assert!(!token_mounted(c), "{}", ctx(&format!("{n} must not mount the token")));
            let mounts: Vec<&Value> =
                c["volumeMounts"].as_array().into_iter().flatten().filter(|m| m["name"] == "sidekey-secrets").collect();
            if selected.contains(&n.to_owned()) {
                assert_eq!(mounts.len(), 1, "{}", ctx(&format!("{n} mounts once")));
                assert_eq!(mounts[0]["readOnly"], true);
                assert_eq!(mounts[0]["mountPath"], mount);
            } else {
                assert!(mounts.is_empty(), "{}", ctx(&format!("{n} not selected")));
                assert_eq!(c, &orig, "{}", ctx(&format!("{n} untouched")));
            }
            // No reference-valued env var survives; every other entry keeps its order.
            let kept: Vec<&Value> = orig["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| {
                    let mapped = e
                        .pointer("/valueFrom/secretKeyRef/name")
                        .and_then(Value::as_str)
                        .is_some_and(|s| ann.get(format!("sidekey.dev/map-{s}")).is_some());
                    !e["value"].as_str().is_some_and(is_env_reference) && !mapped
                })
                .collect();
            let now: Vec<&Value> = c["env"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| !e["name"].as_str().unwrap().ends_with("_FILE") || kept.contains(e))
                .collect();
            assert_eq!(now, kept, "{}", ctx(&format!("{n} env kept in order")));
            for e in c["env"].as_array().into_iter().flatten() {
                assert!(!e["value"].as_str().is_some_and(is_env_reference), "{}", ctx("reference left in env"));
                if let Some(s) = e.pointer("/valueFrom/secretKeyRef/name").and_then(Value::as_str) {
                    assert!(ann.get(format!("sidekey.dev/map-{s}")).is_none(), "{}", ctx("mapped secretKeyRef left"));
                }
            }
            for field in [
                "image",
                "ports",
                "resources",
                "securityContext",
                "readinessProbe",
                "livenessProbe",
                "lifecycle",
                "args",
            ] {
                assert_eq!(c.get(field), orig.get(field), "{}", ctx(&format!("{n}.{field} unchanged")));
            }
            if env_mode != "exec" {
                assert_eq!(c.get("command"), orig.get("command"), "{}", ctx(&format!("{n}.command unchanged")));
            }
        }
    }
    // Restricted before ⇒ restricted after.
    if pss::check_pod_spec(bs).is_empty() {
        let v = pss::check_pod_spec(s);
        assert!(v.is_empty(), "{}: {v:?}", ctx("still restricted"));
    }
}

#[test]
fn every_valid_corpus_file_injects_validates_and_is_idempotent() {
    let validate = sidekey_testenv::tool("SIDEKEY_KUBERNETES_VALIDATE");
    let dir = tempfile::tempdir().unwrap();
    for path in sidekey_testenv::corpus_files("valid") {
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let out = inject_file(&path);
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();

        // Valid Kubernetes 1.34, List items one by one.
        let after_docs = yaml::parse_documents(&text).unwrap();
        let split = dir.path().join(&file);
        std::fs::write(&split, yaml::to_yaml_stream(&objects(&after_docs))).unwrap();
        let v = Command::new(&validate).args(["--strict", "-k", "1.34.0"]).arg(&split).output().unwrap();
        let report = format!("{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
        assert!(v.status.success() && !report.contains("WARN") && !report.contains("ERROR"), "{file}: {report}");

        // Injecting the output again changes nothing, byte for byte.
        let again = inject_stdin(&text);
        assert!(again.status.success(), "{file}: {}", String::from_utf8_lossy(&again.stderr));
        assert_eq!(String::from_utf8(again.stdout).unwrap(), text, "{file}: not idempotent");

        // One document per input document, Lists stay Lists, and the contract.
        let before_docs = yaml::parse_documents(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(before_docs.len(), after_docs.len(), "{file}: document count");
        let (before, after) = (objects(&before_docs), objects(&after_docs));
        assert_eq!(before.len(), after.len(), "{file}: object count");
        for (b, a) in before.iter().zip(&after) {
            match template(b) {
                Some(t) if opted_in(t) => {
                    check_injected(&file, t, template(a).unwrap());
                    // Everything outside the pod template is unchanged.
                    let p = template_pointer(b["apiVersion"].as_str().unwrap(), b["kind"].as_str().unwrap()).unwrap();
                    let (mut b2, mut a2) = (b.clone(), a.clone());
                    if !p.is_empty() {
                        *b2.pointer_mut(p).unwrap() = Value::Null;
                        *a2.pointer_mut(p).unwrap() = Value::Null;
                        assert_eq!(a2, b2, "{file}: outside the template");
                    }
                }
                _ => assert_eq!(a, b, "{file}: {} must pass through unchanged", b["kind"]),
            }
        }
    }
}

#[test]
fn every_invalid_corpus_file_is_refused_naming_the_key() {
    for path in sidekey_testenv::corpus_files("invalid") {
        let text = std::fs::read_to_string(&path).unwrap();
        let expected = text.lines().next().and_then(|l| l.strip_prefix("# expect-error: ")).unwrap().trim().to_owned();
        let out = inject_file(&path);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: accepted", path.display());
        assert!(out.stdout.is_empty(), "{}: wrote output", path.display());
        assert!(stderr.contains(&expected), "{}: {stderr}", path.display());
    }
}

fn corpus(file: &str) -> Vec<Value> {
    let out = inject_file(&sidekey_testenv::corpus_dir().join("valid").join(file));
    assert!(out.status.success());
    objects(&yaml::parse_documents(&String::from_utf8(out.stdout).unwrap()).unwrap())
}

fn env_names(c: &Value) -> Vec<String> {
    c["env"].as_array().into_iter().flatten().map(|e| e["name"].as_str().unwrap().to_owned()).collect()
}

fn agent_config(spec: &Value) -> sidekey::agent_config::AgentConfig {
    let agent = containers(spec, "initContainers")
        .into_iter()
        .find(|c| c["name"] == "sidekey-agent" || c["name"] == "sidekey-init")
        .unwrap();
    let json = agent["env"][0]["value"].as_str().unwrap().to_owned();
    sidekey::agent_config::AgentConfig::from_json(&json).unwrap()
}

#[test]
fn corpus_01_shares_one_lease_and_keeps_the_pod_restricted() {
    let objs = corpus("01-pod-restricted-vault.yaml");
    let spec = &objs[0]["spec"];
    assert!(env_names(&spec["containers"][0]).contains(&"DB_PASSWORD_FILE".to_owned()));
    let cfg = agent_config(spec);
    let creds: Vec<_> = cfg
        .files
        .iter()
        .filter(|f| f.reference.without_key().to_string() == "vault:database/creds/billing-api")
        .collect();
    assert_eq!(creds.len(), 2, "db-creds and db-url read one path, so the agent holds one lease for both");
    assert_eq!(cfg.files.iter().find(|f| f.name == "stripe-key").unwrap().mode, 0o400);
}

#[test]
fn corpus_02_mounts_only_selected_containers_and_keeps_the_s3_arn() {
    let objs = corpus("02-deployment-aws-subset.yaml");
    let spec = &objs[0]["spec"]["template"]["spec"];
    let c = containers(spec, "containers");
    let checkout = env_names(find(&c, "checkout"));
    assert!(checkout.contains(&"DB_PASSWORD_FILE".into()) && checkout.contains(&"PAYMENT_API_KEY_FILE".into()));
    assert!(
        find(&c, "checkout")["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["value"] == "arn:aws:s3:::shop-checkout-uploads")
    );
    let cfg = agent_config(spec);
    assert_eq!(cfg.aws.as_ref().unwrap().region.as_deref(), Some("us-east-1"));
    assert!(cfg.vault.is_none(), "no Vault reference, no Vault settings and no token");
}

#[test]
fn corpus_03_moves_mapped_secrets_and_keeps_the_rest() {
    let objs = corpus("03-statefulset-mapped-secrets.yaml");
    let spec = &objs[0]["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    assert_eq!(env_names(c), ["DB_USER_FILE", "DB_PASSWORD_FILE", "SMTP_PASSWORD", "REGION", "POD_IP"]);
    assert_eq!(c["envFrom"], serde_json::json!([{"configMapRef": {"name": "orders-config"}}]));
    let cfg = agent_config(spec);
    assert!(cfg.files.iter().any(|f| f.dir && f.name == "orders-api-keys"));
    assert_eq!(spec["initContainers"][0]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(spec["initContainers"][0]["securityContext"]["runAsUser"], 65532, "the app's UID");
}

#[test]
fn corpus_04_legacy_keeps_octal_default_mode() {
    let objs = corpus("04-daemonset-legacy.yaml");
    let spec = &objs[0]["spec"]["template"]["spec"];
    assert_eq!(names(spec, "initContainers"), ["sidekey-init"]);
    assert_eq!(names(spec, "containers"), ["shipper", "sidekey-agent"]);
    assert_eq!(spec["volumes"][0]["configMap"]["defaultMode"], 416);
    assert!(env_names(&spec["containers"][0]).contains(&"ELASTICSEARCH_PASSWORD_FILE".into()));
    assert_eq!(agent_config(spec).vault.unwrap().namespace.as_deref(), Some("platform/logging"));
}

#[test]
fn corpus_05_init_only_agent_runs_before_the_init_container_that_needs_it() {
    let objs = corpus("05-job-init-only.yaml");
    let spec = &objs[0]["spec"]["template"]["spec"];
    assert_eq!(names(spec, "initContainers"), ["sidekey-agent", "wait-for-db", "check-schema"]);
    let cfg = agent_config(spec);
    assert_eq!(cfg.files.len(), 2, "PGUSER and PGPASSWORD, shared by both containers");
    assert!(cfg.files.iter().all(|f| f.reference.without_key().to_string() == "vault:database/creds/orders-migrator"));
    let c = containers(spec, "initContainers");
    assert_eq!(find(&c, "wait-for-db").get("volumeMounts"), None);
}

#[test]
fn corpus_06_exec_wraps_the_command() {
    let objs = corpus("06-cronjob-exec.yaml");
    let spec = &objs[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let cmd: Vec<&str> = c["command"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(cmd[..2], ["/sidekey/bin/sidekey-agent", "exec"]);
    assert_eq!(cmd[cmd.len() - 4..], ["--", "python", "-m", "reports.nightly"]);
    assert_eq!(env_names(c), ["REPORTS_DB_HOST", "TZ", "JOB_NAME"]);
}

#[test]
fn corpus_07_remove_mode_adds_no_file_var() {
    let objs = corpus("07-replicaset-remove-sighup.yaml");
    let spec = &objs[0]["spec"]["template"]["spec"];
    assert_eq!(env_names(&spec["containers"][0]), ["NODE_ENV", "SECRETS_DIR"]);
    assert_eq!(spec["shareProcessNamespace"], true);
}

#[test]
fn corpus_08_list_keeps_items_and_changes_only_the_deployment() {
    let out = inject_file(&sidekey_testenv::corpus_dir().join("valid/08-list-mixed.yaml"));
    let docs = yaml::parse_documents(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["kind"], "List");
    let kinds: Vec<&str> = docs[0]["items"].as_array().unwrap().iter().map(|i| i["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ServiceAccount", "ConfigMap", "Service", "Deployment", "Pod"]);
}

#[test]
fn corpus_09_agent_sits_between_the_native_sidecar_and_the_migration() {
    let objs = corpus("09-multidoc-native-sidecar.yaml");
    let spec = &objs[1]["spec"]["template"]["spec"];
    assert_eq!(names(spec, "initContainers"), ["cloud-sql-proxy", "sidekey-agent", "db-migrate"]);
    let c = containers(spec, "initContainers");
    let migrate = find(&c, "db-migrate");
    assert_eq!(env_names(migrate), ["DB_PASSWORD_FILE"]);
    assert_eq!(
        migrate["env"][0]["value"],
        find(&containers(spec, "containers"), "catalog")["env"][0]["value"],
        "one reference, one file"
    );
    assert!(migrate["env"][0]["value"].as_str().unwrap().starts_with("/var/run/secrets/catalog/"));
}

#[test]
fn yaml_1_1_scalars_survive_the_round_trip() {
    let input = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  a: \"yes\"\n  b: \"off\"\n  c: \"0077\"\n  d: \"0640\"\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n    - name: c\n      image: x\n  volumes:\n    - name: v\n      configMap:\n        name: x\n        defaultMode: 0640\n";
    let out = inject_stdin(input);
    assert!(out.status.success());
    let docs = yaml::parse_documents(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(docs[0]["data"], serde_json::json!({"a": "yes", "b": "off", "c": "0077", "d": "0640"}));
    assert_eq!(docs[1]["spec"]["volumes"][0]["configMap"]["defaultMode"], 416);
}

#[test]
fn json_output_is_the_same_object() {
    let path = sidekey_testenv::corpus_dir().join("valid/01-pod-restricted-vault.yaml");
    let yaml_out = yaml::parse_documents(&String::from_utf8(inject_file(&path).stdout).unwrap()).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_sidekey")).args(["inject", "-o", "json", "-f"]).arg(&path).output().unwrap();
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json, yaml_out[0]);
}

#[test]
fn bad_yaml_and_missing_files_fail_without_output() {
    let out = inject_stdin("a: [1, 2\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line"));
    let out = inject_file(Path::new("/nonexistent/x.yaml"));
    assert_eq!(out.status.code(), Some(66));
    let out = Command::new(env!("CARGO_BIN_EXE_sidekey"))
        .args(["inject", "-f", "-", "--config", "/nonexistent/config.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

/// `sidekey inject` writes exactly the committed output for every valid
/// corpus file, warnings included: a refactoring must not change a byte.
/// After an intended change, `SIDEKEY_BLESS=1 cargo test --test corpus`
/// rewrites `tests/golden/inject/` (review the diff).
#[test]
fn inject_output_is_byte_for_byte_the_golden_output() {
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/inject");
    let bless = std::env::var_os("SIDEKEY_BLESS").is_some();
    let mut files: Vec<_> = std::fs::read_dir(sidekey_testenv::corpus_dir().join("valid"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the corpus is missing: {files:?}");
    let mut differ = Vec::new();
    for path in files {
        let out = inject_stdin(&std::fs::read_to_string(&path).unwrap());
        assert!(out.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        for (ext, got) in [("yaml", &out.stdout), ("stderr", &out.stderr)] {
            let want_path = golden.join(format!("{stem}.{ext}"));
            if bless {
                std::fs::write(&want_path, got).unwrap();
            } else if std::fs::read(&want_path).ok().as_ref() != Some(got) {
                differ.push(want_path.display().to_string());
            }
        }
    }
    assert!(differ.is_empty(), "inject output differs from {differ:?} (SIDEKEY_BLESS=1 rewrites them)");
}
