//! `sidekey migrate` through the real binary: the corpus round trip
//! migrate → inject leaves no env-var secret and stays valid Kubernetes;
//! comments survive; a second run changes nothing.

#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;

use serde_json::Value;
use sidekey::workload::template_pointer;
use sidekey::yaml;

const TO: &str = "vault:secret/data/{namespace}/{secret}";

fn run(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    sidekey_testenv::run_with_stdin(env!("CARGO_BIN_EXE_sidekey"), args, stdin)
}

fn templates(docs: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for d in docs {
        let items: Vec<Value> =
            if d["kind"] == "List" { d["items"].as_array().unwrap().clone() } else { vec![d.clone()] };
        for o in items {
            if let Some(p) = template_pointer(o["apiVersion"].as_str().unwrap_or(""), o["kind"].as_str().unwrap_or(""))
            {
                out.push(o.pointer(p).unwrap().clone());
            }
        }
    }
    out
}

#[test]
fn corpus_round_trip_migrate_then_inject_leaves_no_env_secret() {
    let validate = sidekey_testenv::tool("SIDEKEY_KUBERNETES_VALIDATE");
    let dir = tempfile::tempdir().unwrap();
    for path in sidekey_testenv::corpus_files("valid") {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let original = std::fs::read_to_string(&path).unwrap();
        let (ok, migrated, err) = run(&["migrate", "--to", TO, "-f", path.to_str().unwrap()], None);
        assert!(ok, "{name}: {err}");
        // Comments and every original line survive.
        let mut lines = migrated.lines();
        for l in original.lines() {
            assert!(lines.any(|m| m == l), "{name}: lost line {l:?}");
        }
        let (ok, again, _) = run(&["migrate", "--to", TO, "-f", "-"], Some(&migrated));
        assert!(ok && again == migrated, "{name}: migrate is not idempotent");

        let (ok, injected, err) = run(&["inject", "-f", "-"], Some(&migrated));
        assert!(ok, "{name}: {err}");
        let docs = yaml::parse_documents(&injected).unwrap();
        for t in templates(&docs) {
            if t.pointer("/metadata/annotations/sidekey.dev~1inject").and_then(Value::as_str) == Some("false") {
                continue; // an explicit opt-out is respected
            }
            for list in ["initContainers", "containers"] {
                for c in t["spec"][list].as_array().into_iter().flatten() {
                    for e in c["env"].as_array().into_iter().flatten() {
                        assert!(e.pointer("/valueFrom/secretKeyRef").is_none(), "{name}: {e} left");
                    }
                    for e in c["envFrom"].as_array().into_iter().flatten() {
                        assert!(e.get("secretRef").is_none(), "{name}: {e} left");
                    }
                }
            }
        }
        let mut flat = Vec::new();
        for d in docs {
            if d["kind"] == "List" {
                flat.extend(d["items"].as_array().unwrap().clone());
            } else {
                flat.push(d);
            }
        }
        let file = dir.path().join(&name);
        std::fs::write(&file, yaml::to_yaml_stream(&flat)).unwrap();
        let v = Command::new(&validate).args(["--strict", "-k", "1.34.0"]).arg(&file).output().unwrap();
        let report = format!("{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
        assert!(v.status.success() && !report.contains("WARN") && !report.contains("ERROR"), "{name}: {report}");
    }
}

#[test]
fn in_place_rewrites_files_and_bad_targets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.yaml");
    std::fs::copy(sidekey_testenv::corpus_dir().join("valid/03-statefulset-mapped-secrets.yaml"), &file).unwrap();
    let (ok, out, err) =
        run(&["migrate", "--to", "aws-sm:{namespace}/{secret}", "--in-place", "-f", file.to_str().unwrap()], None);
    assert!(ok && out.is_empty(), "{err}");
    assert!(err.contains("added sidekey.dev/map-smtp-credentials: aws-sm:orders/smtp-credentials"), "{err}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("sidekey.dev/map-smtp-credentials: aws-sm:orders/smtp-credentials"));
    // The existing maps are kept as they were.
    assert!(text.contains("sidekey.dev/map-orders-db: \"vault:secret/data/orders/db\""));
    let (ok, _, err) = run(&["migrate", "--to", "vault:secret/data/fixed", "-f", file.to_str().unwrap()], None);
    assert!(!ok && err.contains("{secret}"), "{err}");
}

/// `--push` checks everything it can before talking to a store: these fail
/// with no server at all, naming the Secret or key, never a value.
#[test]
fn push_refuses_missing_secrets_and_keys_before_writing_anything() {
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: shop}\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          image: x\n          env:\n            - name: DB_PASSWORD\n              valueFrom: {secretKeyRef: {name: db, key: password}}\n";
    let (ok, _, err) = run(&["migrate", "--to", TO, "--push", "-f", "-"], Some(deploy));
    assert!(!ok && err.contains("Secret shop/db (read by Deployment shop/api) is not among the inputs"), "{err}");
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: shop}\nstringData: {pw: not-this-value-7731}\n---\n";
    let (ok, out, err) = run(&["migrate", "--to", TO, "--push", "-f", "-"], Some(&format!("{secret}{deploy}")));
    assert!(!ok && err.contains("Secret shop/db has no key \"password\"") && err.contains("it has: pw"), "{err}");
    assert!(!out.contains("not-this-value") && !err.contains("not-this-value"));
    // --cluster and --overwrite only with --push.
    let (ok, _, err) = run(&["migrate", "--to", TO, "--cluster", "-f", "-"], Some(deploy));
    assert!(!ok && err.contains("--push"), "{err}");
    // --cluster only with the namespaces the operator chose.
    let (ok, _, err) = run(&["migrate", "--to", TO, "--push", "--cluster", "-f", "-"], Some(deploy));
    assert!(!ok && err.contains("--namespace"), "{err}");
}

/// A manifest decides neither where `--push` writes nor whose Secret it
/// reads: a map annotation outside `--to` and a namespace outside
/// `--namespace` are refused, dry run included, before any store is used.
#[test]
fn push_refuses_destinations_and_namespaces_the_operator_did_not_choose() {
    let secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: shop}\nstringData: {password: not-this-value-5521}\n---\n";
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: shop}\nspec:\n  template:\n    metadata:\n      annotations: {sidekey.dev/map-db: 'vault:secret/data/platform/root'}\n    spec:\n      containers:\n        - name: api\n          image: x\n          env:\n            - name: DB_PASSWORD\n              valueFrom: {secretKeyRef: {name: db, key: password}}\n";
    let input = format!("{secret}{deploy}");
    let to = "vault:secret/data/{namespace}/{secret}";
    for dry in [false, true] {
        let mut args = vec!["migrate", "--to", to, "--push", "-f", "-"];
        if dry {
            args.push("--dry-run");
        }
        let (ok, _, err) = run(&args, Some(&input));
        assert!(!ok, "{err}");
        assert!(err.contains("push: may write references under vault:secret/data/<namespace>/ (from --to)"), "{err}");
        assert!(
            err.contains("Secret shop/db would be written to vault:secret/data/platform/root (from the sidekey.dev/map-db annotation of Deployment shop/api), which is not under vault:secret/data/shop/"),
            "{err}"
        );
    }
    let narrow = "vault:secret/data/shop/{secret}";
    let (ok, _, err) = run(
        &[
            "migrate",
            "--to",
            narrow,
            "--push",
            "-f",
            "-",
            "--allow-destination",
            "vault:secret/data/platform/",
            "-n",
            "web",
        ],
        Some(&input),
    );
    assert!(
        !ok && err.contains("Secret shop/db (read by Deployment shop/api) is in namespace shop, not among --namespace"),
        "{err}"
    );
    assert!(!err.contains("is not under"), "the allowed prefix is allowed: {err}");
    assert!(!err.contains("not-this-value"));
}

/// When a pod template cannot be edited in place, only its document is
/// written anew, and the warning names the workload and what is lost.
#[test]
fn a_rewrite_names_its_cause_and_what_is_lost() {
    let ok = "# keep me\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: ok, namespace: shop}\nspec:\n  template:\n    metadata:\n      labels: {app: ok}\n    spec:\n      containers:\n        - name: c\n          image: x\n          env:\n            - name: P\n              valueFrom: {secretKeyRef: {name: db, key: password}}\n";
    let bare = ok
        .replace("name: ok,", "name: bare,")
        .replace("    metadata:\n      labels: {app: ok}\n", "")
        .replace("# keep me\n", "");
    let (done, out, err) = run(&["migrate", "--to", TO, "-f", "-"], Some(&format!("{ok}---\n{bare}")));
    assert!(done, "{err}");
    assert!(
        err.contains("warning: <stdin>: Deployment shop/bare: its document was written anew, because its pod template could not be edited in place: the comments and formatting inside that document are lost; the rest of the file is unchanged"),
        "{err}"
    );
    assert!(out.starts_with("# keep me\n"), "the other document's comment is kept: {out}");
    let docs = sidekey::yaml::parse_documents(&out).unwrap();
    assert_eq!(
        docs[1]["spec"]["template"]["metadata"]["annotations"]["sidekey.dev/map-db"],
        format!("{}", TO.replace("{namespace}", "shop").replace("{secret}", "db"))
    );
}

/// `migrate --from vault-k8s` over the vault-k8s corpus (tests/data/vault-k8s):
/// every workload sidekey translates comes out valid Kubernetes with its
/// comments, the label and no vault.hashicorp.com annotation, and a second
/// run changes nothing; the others are left as they are, named with the
/// annotation. (That the files rendered are Vault Agent's bytes is
/// tests/e2e/tests/vault_k8s.rs.)
#[test]
fn from_vault_k8s_rewrites_the_corpus_validly_and_names_what_it_refuses() {
    let validate = sidekey_testenv::tool("SIDEKEY_KUBERNETES_VALIDATE");
    let dir = tempfile::tempdir().unwrap();
    let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vault-k8s");
    let mut files: Vec<_> = std::fs::read_dir(&corpus)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let original = std::fs::read_to_string(&path).unwrap();
        let refused = original.lines().find_map(|l| l.strip_prefix("# expect: refused ")).map(str::to_owned);
        let (ok, out, err) = run(&["migrate", "--from", "vault-k8s", "-f", path.to_str().unwrap()], None);
        if let Some(key) = refused {
            assert!(!ok && err.contains("not migrated") && err.contains(&key), "{name}: {err}");
            assert_eq!(out, original, "{name}: a refused workload is left as it is");
            continue;
        }
        assert!(ok, "{name}: {err}");
        assert!(err.contains("vault.hashicorp.com annotations replaced by"), "{name}: {err}");
        for l in original.lines().filter(|l| l.trim_start().starts_with('#')) {
            assert!(out.lines().any(|m| m == l), "{name}: lost comment {l:?}");
        }
        let doc = &yaml::parse_documents(&out).unwrap()[0];
        let t = if doc["kind"] == "Pod" { doc } else { &doc["spec"]["template"] };
        assert_eq!(t["metadata"]["labels"]["sidekey.dev/inject"], "true", "{name}");
        assert!(
            !t["metadata"]["annotations"].as_object().unwrap().keys().any(|k| k.starts_with("vault.hashicorp.com/"))
        );
        let (ok, again, _) = run(&["migrate", "--from", "vault-k8s", "-f", "-"], Some(&out));
        assert!(ok && again == out, "{name}: not idempotent");
        // inject leaves a vault-k8s pod alone, saying how to translate it; the
        // translated one it injects.
        let (ok, _, err) = run(&["inject", "-f", path.to_str().unwrap()], None);
        assert!(ok && err.contains("migrate --from vault-k8s"), "{name}: {err}");
        let (ok, injected, err) = run(&["inject", "-f", "-"], Some(&out));
        assert!(ok && injected.contains("sidekey-agent"), "{name}: {err}");
        let file = dir.path().join(&name);
        std::fs::write(&file, &out).unwrap();
        let v = Command::new(&validate).args(["--strict", "-k", "1.34.0"]).arg(&file).output().unwrap();
        let report = format!("{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
        assert!(v.status.success() && !report.contains("WARN") && !report.contains("ERROR"), "{name}: {report}");
    }
    // --in-place and --dry-run as for --to; --from and --to exclude each other.
    let file = dir.path().join("in-place.yaml");
    std::fs::copy(corpus.join("06-katakoda-pod-payroll.yaml"), &file).unwrap();
    let (ok, diff, _) = run(&["migrate", "--from", "vault-k8s", "--dry-run", "-f", file.to_str().unwrap()], None);
    assert!(
        ok && diff.contains("-    vault.hashicorp.com/role: \"internal-app\"")
            && diff.contains("+    sidekey.dev/vault-role: internal-app"),
        "{diff}"
    );
    let (ok, out, err) = run(&["migrate", "--from", "vault-k8s", "--in-place", "-f", file.to_str().unwrap()], None);
    assert!(ok && out.is_empty(), "{err}");
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("sidekey.dev/secret-database-config.txt: vault:internal/data/database/config")
    );
    let (ok, _, err) = run(&["migrate", "--from", "vault-k8s", "--to", TO, "-f", file.to_str().unwrap()], None);
    assert!(!ok && err.contains("cannot be used with"), "{err}");
}
