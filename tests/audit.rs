//! `sidekey audit` through the real binary: expected findings on the corpus
//! and on manifests written for the test, SARIF valid against the SARIF
//! 2.1.0 schema, `--fail-on` exit codes, and no value in any output.

#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;

use serde_json::Value;

fn audit(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sidekey")).arg("audit").args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn json_findings(path: &str) -> Vec<Value> {
    let (code, out, err) = audit(&["-f", path, "--format", "json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().clone()
}

fn has(findings: &[Value], rule: &str, object: &str, path_part: &str) -> bool {
    findings
        .iter()
        .any(|f| f["rule"] == rule && f["object"] == object && f["path"].as_str().unwrap().contains(path_part))
}

fn corpus(file: &str) -> String {
    sidekey_testenv::corpus_dir().join("valid").join(file).display().to_string()
}

const LEAKY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: leaky, namespace: test}
spec:
  selector: {matchLabels: {app: leaky}}
  template:
    metadata: {labels: {app: leaky}}
    spec:
      hostPID: true
      containers:
        - name: app
          image: registry.example/app:latest
          env:
            - {name: DB_PASSWORD, value: "correct-horse-battery"}
            - {name: AWS_ACCESS_KEY_ID, value: "AKIAIOSFODNN7EXAMPLE"}
            - {name: SIGNING_JWT, value: "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXNlY3JldA"}
            - {name: DATABASE_URL, value: "postgres://app:sup3rs3cret@db:5432/app"}
            - {name: GITHUB_TOKEN, value: "plain-token-value"}
            - {name: LOG_LEVEL, value: debug}
          securityContext: {privileged: true}
"#;

#[test]
fn finds_secrets_in_env_without_printing_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leaky.yaml");
    std::fs::write(&path, LEAKY).unwrap();
    let p = path.display().to_string();
    let f = json_findings(&p);
    let obj = "Deployment test/leaky";
    assert!(has(&f, "SK003", obj, "env[DB_PASSWORD]"));
    assert!(has(&f, "SK004", obj, "env[AWS_ACCESS_KEY_ID]"));
    assert!(has(&f, "SK004", obj, "env[SIGNING_JWT]"));
    assert!(has(&f, "SK004", obj, "env[DATABASE_URL]"));
    assert!(f.iter().any(|x| x["rule"] == "SK003"
        && x["path"].as_str().unwrap().contains("GITHUB_TOKEN")
        && x["confidence"] == "medium"));
    assert!(!f.iter().any(|x| x["path"].as_str().unwrap().contains("LOG_LEVEL")));
    for rule in ["SK101", "SK104", "SK108", "SK110", "SK201"] {
        assert!(f.iter().any(|x| x["rule"] == rule), "{rule}");
    }
    for format in ["table", "json", "sarif"] {
        let (_, out, err) = audit(&["-f", &p, "--format", format]);
        for value in [
            "correct-horse-battery",
            "AKIAIOSFODNN7EXAMPLE",
            "c2lnbmF0dXJlLXNlY3JldA",
            "sup3rs3cret",
            "plain-token-value",
        ] {
            assert!(!out.contains(value) && !err.contains(value), "{format} output shows a value");
        }
    }
}

#[test]
fn expected_findings_on_the_corpus() {
    let f = json_findings(&corpus("10-not-opted-in.yaml"));
    assert!(has(&f, "SK001", "Pod jobs/legacy-worker", "env[QUEUE_PASSWORD]"));
    assert!(has(&f, "SK002", "Pod jobs/legacy-worker", "envFrom"));
    assert!(has(&f, "SK005", "Pod jobs/legacy-worker", "env[API_TOKEN]"));
    assert!(has(&f, "SK001", "Deployment jobs/reporting-ui", "env[DB_PASSWORD]"));

    let f = json_findings(&corpus("04-daemonset-legacy.yaml"));
    assert!(has(&f, "SK101", "DaemonSet logging/log-shipper", "containers[shipper]"));
    assert!(has(&f, "SK111", "DaemonSet logging/log-shipper", "volumes[varlog]"));
    // References in an opted-in pod are what sidekey wants: no env finding.
    assert!(!f.iter().any(|x| x["rule"].as_str().unwrap().starts_with("SK00")));

    // A restricted pod with pinned-less images: only image and limit findings.
    let f = json_findings(&corpus("01-pod-restricted-vault.yaml"));
    let rules: Vec<&str> = f.iter().map(|x| x["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["SK201", "SK109"], "{f:?}");

    // Non-workloads have nothing but their namespace's policy check.
    let f = json_findings(&corpus("12-non-workloads.yaml"));
    assert!(f.is_empty(), "{f:?}");
}

#[test]
fn sarif_output_validates_against_the_sarif_2_1_0_schema() {
    let (_, out, _) =
        audit(&["-f", &sidekey_testenv::corpus_dir().join("valid").display().to_string(), "--format", "sarif"]);
    let sarif: Value = serde_json::from_str(&out).unwrap();
    assert!(!sarif["runs"][0]["results"].as_array().unwrap().is_empty());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.sarif");
    std::fs::write(&file, &out).unwrap();
    let schema = sidekey_testenv::tool("SIDEKEY_SARIF_SCHEMA");
    let check = Command::new(sidekey_testenv::tool("SIDEKEY_PYTHON"))
        .args([
            "-c",
            "import json,sys,jsonschema; v=jsonschema.Draft202012Validator(json.load(open(sys.argv[1]))); e=list(v.iter_errors(json.load(open(sys.argv[2])))); [print(x.message) for x in e[:10]]; sys.exit(1 if e else 0)",
        ])
        .arg(&schema)
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn fail_on_gates_ci() {
    let p = corpus("01-pod-restricted-vault.yaml");
    assert_eq!(audit(&["-f", &p, "--fail-on", "high"]).0, 0);
    assert_eq!(audit(&["-f", &p, "--fail-on", "medium"]).0, 1);
    assert_eq!(audit(&["-f", &p, "--fail-on", "medium", "--no-network-policy-check"]).0, 0);
    assert_eq!(audit(&["-f", &p, "--fail-on", "low"]).0, 1);
    assert_eq!(audit(&["-f", "/nonexistent.yaml"]).0, 66);
}

#[test]
fn hostile_files_are_refused_by_expansion_and_by_size() {
    let dir = tempfile::tempdir().unwrap();
    // 545 bytes of nested aliases ("billion laughs") would expand to ~10^9 nodes.
    let mut laughs = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        laughs.push_str(&format!("{}: &{} [{}]\n", w[1], w[1], vec![format!("*{}", w[0]); 9].join(",")));
    }
    let path = dir.path().join("laughs.yaml");
    std::fs::write(&path, &laughs).unwrap();
    let (code, _, err) = audit(&["-f", path.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("excessive aliasing"), "{err}");

    // A file larger than any manifest is refused by size, before parsing.
    let big = dir.path().join("big.yaml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(65 * 1024 * 1024).unwrap();
    let (code, _, err) = audit(&["-f", big.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("larger than 64 MiB"), "{err}");
}

/// Precision and recall of the literal rules (SK003 by name, SK004 by
/// value) on a labelled set of env vars (`tests/data/literals.tsv`). The
/// counts are exact so that docs/audit.md, which states them, stays true:
/// a change to the rules that moves them updates both.
#[test]
fn literal_rules_precision_and_recall_on_the_labelled_set() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/literals.tsv")).unwrap();
    let (mut tp, mut fp, mut fn_, mut tn) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let mut cols = line.splitn(3, '\t');
        let (label, name, value) = (cols.next().unwrap(), cols.next().unwrap(), cols.next().unwrap());
        let pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"},
            "spec": {"containers": [{"name": "c", "image": "x", "env": [{"name": name, "value": value.replace("\\n", "\n")}]}]}});
        let flagged = sidekey::audit::audit_object(&pod).iter().any(|f| f.rule == "SK003" || f.rule == "SK004");
        match (label == "secret", flagged) {
            (true, true) => tp.push(name),
            (false, true) => fp.push(name),
            (true, false) => fn_.push(name),
            (false, false) => tn += 1,
        }
    }
    let precision = tp.len() as f64 / (tp.len() + fp.len()) as f64;
    let recall = tp.len() as f64 / (tp.len() + fn_.len()) as f64;
    let report = format!(
        "{} true positives, {} false positives {fp:?}, {} false negatives {fn_:?}, {tn} true negatives: precision {precision:.2}, recall {recall:.2}",
        tp.len(),
        fp.len(),
        fn_.len()
    );
    println!("{report}");
    assert_eq!((tp.len(), fp.len(), fn_.len(), tn), (41, 4, 3, 40), "{report}");
}

/// A file that does not parse was not audited: the table says so, and the
/// exit status is 1, even when the other files have no findings.
#[test]
fn an_unreadable_file_is_reported_not_audited_never_a_clean_pass() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n").unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: [unclosed\n").unwrap();
    let (code, out, err) =
        audit(&["-f", good.to_str().unwrap(), "-f", bad.to_str().unwrap(), "--no-network-policy-check"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("no findings in the files that were read"), "{out}");
    assert!(out.contains(&format!("not audited (not YAML): {}", bad.display())), "{out}");
    let (code, out, _) = audit(&["-f", good.to_str().unwrap(), "--no-network-policy-check"]);
    assert_eq!((code, out.trim()), (0, "no findings"));
}
