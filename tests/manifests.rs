//! `sidekey audit`, `migrate` and `inject` agree on real manifests that
//! other projects ship (`tests/manifests/`, with their sources): audit
//! finds every env-var Secret; migrate only inserts, keeps every line and
//! comment, is idempotent, and never opts in what inject refuses; inject
//! accepts every migrated file, its output is valid Kubernetes 1.34 and
//! injecting again changes nothing.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use sidekey::workload::{template_pointer, templates};
use sidekey::yaml;

const TO: &str = "vault:secret/data/{namespace}/{secret}";

fn run(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    sidekey_testenv::run_with_stdin(env!("CARGO_BIN_EXE_sidekey"), args, stdin)
}

fn files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/manifests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 30, "{} manifests in {}", files.len(), dir.display());
    files
}

/// Every object, List items flattened.
fn objects(docs: &[Value]) -> Vec<Value> {
    let mut out = Vec::new();
    for d in docs {
        match d["items"].as_array() {
            Some(items) if d["kind"].as_str().is_some_and(|k| k.ends_with("List")) => out.extend(items.iter().cloned()),
            _ => out.push(d.clone()),
        }
    }
    out
}

/// `(secretKeyRef env vars, envFrom secretRefs)` in the pod templates audit knows.
fn env_secrets(docs: &[Value]) -> (usize, usize) {
    let (mut refs, mut froms) = (0, 0);
    for d in docs {
        for (_, tp) in templates(d) {
            let Some(t) = d.pointer(&tp) else { continue };
            for list in ["initContainers", "containers"] {
                for c in t["spec"][list].as_array().into_iter().flatten() {
                    refs += c["env"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|e| e.pointer("/valueFrom/secretKeyRef").is_some())
                        .count();
                    froms +=
                        c["envFrom"].as_array().into_iter().flatten().filter(|e| e.get("secretRef").is_some()).count();
                }
            }
        }
    }
    (refs, froms)
}

#[test]
fn audit_migrate_and_inject_agree_on_real_manifests() {
    let validate = sidekey_testenv::tool("SIDEKEY_KUBERNETES_VALIDATE");
    let dir = tempfile::tempdir().unwrap();
    let mut migrated_files = 0;
    for path in files() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let file = path.to_str().unwrap();
        let original = std::fs::read_to_string(&path).unwrap();
        let docs = yaml::parse_documents(&original).unwrap_or_else(|e| panic!("{name}: {e}"));

        // audit: one SK001 per secretKeyRef, one SK002 per envFrom secretRef.
        let (ok, out, err) = run(&["audit", "-f", file, "--format", "json", "--no-network-policy-check"], None);
        assert!(ok, "{name}: {err}");
        let findings: Vec<Value> = serde_json::from_str(&out).unwrap();
        let count = |rule: &str| findings.iter().filter(|f| f["rule"] == rule).count();
        let (refs, froms) = env_secrets(&docs);
        assert_eq!((count("SK001"), count("SK002")), (refs, froms), "{name}: audit findings vs env secrets");

        // migrate: insertions only (every line kept, in order), idempotent.
        let (ok, migrated, err) = run(&["migrate", "--to", TO, "-f", file], None);
        assert!(ok, "{name}: {err}");
        if !err.contains("written anew") {
            let mut lines = migrated.lines();
            for l in original.lines() {
                assert!(lines.any(|m| m == l), "{name}: lost line {l:?}");
            }
        }
        if refs + froms == 0 {
            assert_eq!(migrated, original, "{name}: nothing to migrate, yet changed");
        }
        if original.contains("\r\n") {
            assert!(!migrated.replace("\r\n", "").contains('\n'), "{name}: a bare LF in a CRLF file");
        }
        let (ok, again, _) = run(&["migrate", "--to", TO, "-f", "-"], Some(&migrated));
        assert!(ok && again == migrated, "{name}: migrate is not idempotent");
        if migrated != original {
            migrated_files += 1;
        }

        // inject accepts what migrate produced, and again changes nothing.
        let (ok, injected, err) = run(&["inject", "-q", "-f", "-"], Some(&migrated));
        assert!(ok, "{name}: inject refuses what migrate produced: {err}");
        let (ok, twice, err) = run(&["inject", "-q", "-f", "-"], Some(&injected));
        assert!(ok && twice == injected, "{name}: inject is not idempotent: {err}");

        // Every injected template: app containers mount the secrets read-only,
        // the object outside its template is unchanged; valid for 1.34.
        let after = objects(&yaml::parse_documents(&injected).unwrap());
        let before = objects(&yaml::parse_documents(&migrated).unwrap());
        assert_eq!(before.len(), after.len(), "{name}: object count");
        let mut to_validate = Vec::new();
        for (b, a) in before.iter().zip(&after) {
            let Some(p) = template_pointer(a["apiVersion"].as_str().unwrap_or(""), a["kind"].as_str().unwrap_or(""))
            else {
                assert_eq!(a, b, "{name}: {} changed", a["kind"]);
                continue;
            };
            let Some(t) = a.pointer(p) else { continue };
            if t.pointer("/metadata/annotations/sidekey.dev~1status") != Some(&Value::from("injected")) {
                assert_eq!(a, b, "{name}: a template that was not injected changed");
                continue;
            }
            for c in t["spec"]["containers"].as_array().into_iter().flatten().filter(|c| c["name"] != "sidekey-agent") {
                let mount = c["volumeMounts"].as_array().into_iter().flatten().find(|m| m["name"] == "sidekey-secrets");
                if let Some(m) = mount {
                    assert_eq!(m["readOnly"], true, "{name}: {} mounts the secrets writable", c["name"]);
                }
            }
            let (mut a2, mut b2) = (a.clone(), b.clone());
            if !p.is_empty() {
                *a2.pointer_mut(p).unwrap() = Value::Null;
                *b2.pointer_mut(p).unwrap() = Value::Null;
                assert_eq!(a2, b2, "{name}: outside the template");
            }
            // The legacy extensions group is not in the 1.34 schemas.
            if !a["apiVersion"].as_str().unwrap_or("").starts_with("extensions/") {
                to_validate.push(a.clone());
            }
        }
        if !to_validate.is_empty() {
            let out = dir.path().join(&name);
            std::fs::write(&out, yaml::to_yaml_stream(&to_validate)).unwrap();
            let v = Command::new(&validate).args(["--strict", "-k", "1.34.0"]).arg(&out).output().unwrap();
            let report = format!("{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
            assert!(v.status.success() && !report.contains("WARN") && !report.contains("ERROR"), "{name}: {report}");
        }
    }
    assert!(migrated_files >= 8, "only {migrated_files} files had anything to migrate");
}
