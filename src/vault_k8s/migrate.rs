//! `sidekey migrate --from vault-k8s`: manifests annotated for the Vault
//! Agent injector rewritten for good into `sidekey.dev/*` annotations (the
//! translation of [`super::translate`]), so the injector no longer needs
//! its compatibility setting for them.
//!
//! The text is edited, not rewritten: each `vault.hashicorp.com/*` entry
//! of a pod template's annotations (with its block scalar) is taken out,
//! the sidekey entries go where the first one was, and the
//! `sidekey.dev/inject` label is added; comments, key order and the rest of
//! the file stay. Go templates stay Go templates (`format-<name>:
//! go-template`): sidekey renders them itself.

use serde_json::{Map, Value, json};

use crate::annotations::Key;
use crate::migrate::MigrateError;
use crate::{workload, yaml};

/// What happened to one workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Migrated {
    /// `Deployment shop/checkout`.
    pub object: String,
    /// How many `vault.hashicorp.com/*` annotations were taken out.
    pub removed: usize,
    /// The annotations put in (`key`, `value`).
    pub added: Vec<(String, String)>,
    /// What the translation accepted without needing it, and how templates
    /// were kept.
    pub notes: Vec<String>,
    /// Why the workload was left as it was.
    pub refused: Vec<String>,
    /// Whether the file had to be written anew (comments lost).
    pub reserialized: bool,
}

/// `text` without the block-mapping entries whose keys start at `starts`
/// (1-based line, column): each entry's key line and every following line
/// that is blank or indented deeper (its block scalar or nested value).
/// `None` when a key is not where a block entry's key would be.
fn remove_entries(text: &str, starts: &[(usize, usize, String)]) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let indent = |l: &str| l.len() - l.trim_start_matches(' ').len();
    let mut drop = vec![false; lines.len()];
    for (line, col, key) in starts {
        let i = line.checked_sub(1)?;
        let l = lines.get(i)?;
        let rest = l.get(*col..)?;
        let starts_key = rest.starts_with(key.as_str())
            || rest.strip_prefix(['"', '\'']).is_some_and(|r| r.starts_with(key.as_str()));
        if indent(l) != *col || !starts_key {
            return None;
        }
        drop[i] = true;
        let mut j = i + 1;
        while j < lines.len() && (lines[j].trim().is_empty() || indent(lines[j]) > *col) {
            j += 1;
        }
        // Blank lines before the next entry stay with it.
        let mut end = j;
        while end > i + 1 && lines[end - 1].trim().is_empty() {
            end -= 1;
        }
        for d in &mut drop[i + 1..end] {
            *d = true;
        }
    }
    Some(lines.iter().zip(&drop).filter(|(_, d)| !**d).map(|(l, _)| *l).collect())
}

/// Rewrites the vault-k8s annotations of every pod template in `text`.
/// Workloads the translation refuses are left as they are (the report
/// says why); running it again changes nothing.
///
/// # Errors
/// [`MigrateError`] for YAML that does not parse.
pub fn migrate(text: &str) -> Result<(String, Vec<Migrated>), MigrateError> {
    let docs = yaml::parse_documents(text)?;
    let mut expected = docs.clone();
    let mut out = text.to_owned();
    let mut report = Vec::new();
    let mut in_place = true;
    let config = crate::config::InjectorConfig::for_files();
    for (di, doc) in docs.iter().enumerate() {
        for (object_pointer, tp) in workload::templates(doc) {
            let Some(template) = doc.pointer(&tp) else { continue };
            let annotations = template.pointer("/metadata/annotations").and_then(Value::as_object);
            if !super::uses_vault_k8s(annotations) {
                continue;
            }
            let Some(annotations) = annotations else { continue };
            let object = workload::describe(doc.pointer(&object_pointer).unwrap_or(doc));
            let mut m = Migrated { object, ..Migrated::default() };
            let t = match super::translate(annotations) {
                Ok(t) => t,
                Err(problems) => {
                    m.refused = problems.iter().map(ToString::to_string).collect();
                    report.push(m);
                    continue;
                }
            };
            if !t.annotations.contains_key(&Key::Inject.key()) {
                // Not opted in (or injected already): nothing to translate.
                continue;
            }
            let prefix = super::prefix_of(Some(annotations)).unwrap_or(super::PREFIX);
            let vault_keys: Vec<String> = annotations.keys().filter(|k| k.starts_with(prefix)).cloned().collect();
            let mut new_annotations: Map<String, Value> = annotations
                .iter()
                .filter(|(k, _)| !k.starts_with(prefix))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            for (k, v) in &t.annotations {
                new_annotations.insert(k.clone(), json!(v));
            }
            let mut candidate = template.clone();
            candidate["metadata"]["annotations"] = Value::Object(new_annotations.clone());
            let label =
                candidate.pointer("/metadata/labels").and_then(|l| l.get(Key::Inject.key())) != Some(&json!("true"));
            match candidate.pointer_mut("/metadata/labels") {
                Some(Value::Object(labels)) => {
                    labels.insert(Key::Inject.key(), json!("true"));
                }
                None | Some(Value::Null) => candidate["metadata"]["labels"] = json!({ Key::Inject.key(): "true" }),
                Some(_) => {
                    m.refused =
                        vec!["metadata.labels: not a mapping, so the sidekey.dev/inject label cannot be added".into()];
                    report.push(m);
                    continue;
                }
            }
            if let Err(problems) = super::mutate(&mut candidate.clone(), "", None, &config, &t) {
                m.refused = problems.iter().map(ToString::to_string).collect();
                report.push(m);
                continue;
            }
            if let Some(x) = expected[di].pointer_mut(&tp) {
                *x = candidate;
            }
            m.removed = vault_keys.len();
            m.added = t.annotations.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            m.added.sort_by_key(|(k, _)| reading_order(k));
            m.notes = t.notes.clone();
            if t.annotations.keys().any(|k| k.starts_with(&format!("{}format-", crate::PREFIX))) {
                m.notes.push(
                    "templates kept as Go templates (format-<name>: go-template): sidekey renders them as Vault Agent does"
                        .into(),
                );
            }
            if in_place {
                match edit(&out, di, &tp, &vault_keys, &m.added, label) {
                    Some(text) => out = text,
                    None => in_place = false,
                }
            }
            report.push(m);
        }
    }
    let changed = report.iter().any(|m| m.refused.is_empty());
    if !changed {
        return Ok((text.to_owned(), report));
    }
    if in_place && yaml::parse_documents(&out).is_ok_and(|d| d == expected) {
        return Ok((out, report));
    }
    for m in &mut report {
        m.reserialized = m.refused.is_empty();
    }
    Ok((yaml::to_yaml_stream(&expected), report))
}

/// The order annotations are written in: the pod's settings in the order
/// the docs list them, then each file's annotations together.
fn reading_order(key: &str) -> (usize, String, usize) {
    use crate::annotations::Named;
    let name = key.strip_prefix(crate::PREFIX).unwrap_or(key);
    if let Some(i) = Key::ALL.iter().position(|k| k.name() == name) {
        return (0, String::new(), i);
    }
    let kinds = [Named::Secret, Named::Format, Named::Template, Named::Delims, Named::FileMode, Named::MissingKey];
    for (i, kind) in kinds.iter().enumerate() {
        if let Some(file) = name.strip_prefix(kind.prefix()) {
            return (1, file.to_owned(), i);
        }
    }
    (2, name.to_owned(), 0)
}

/// One template's edit: its vault-k8s entries out, the sidekey entries and
/// the label in.
fn edit(
    text: &str,
    di: usize,
    tp: &str,
    vault_keys: &[String],
    added: &[(String, String)],
    label: bool,
) -> Option<String> {
    let positions = yaml::positions(text);
    let keys = &positions.get(di)?.nodes;
    let base = format!("{tp}/metadata/annotations/");
    let starts: Vec<(usize, usize, String)> = vault_keys
        .iter()
        .map(|k| {
            let pointer = format!("{base}{}", json_patch::jsonptr::Token::new(k.as_str()).encoded());
            let key = keys.iter().find(|n| n.kind == yaml::NodeKind::Key && n.pointer == pointer)?;
            Some((key.line, key.col, k.clone()))
        })
        .collect::<Option<_>>()?;
    let removed = remove_entries(text, &starts)?;
    crate::migrate::insert_into_template(&removed, di, tp, added, label)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = r#"# The orders service.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: orders
  namespace: shop
spec:
  selector:
    matchLabels:
      app: orders
  template:
    metadata:
      labels:
        app: orders # the selector
      annotations:
        prometheus.io/scrape: "true"
        vault.hashicorp.com/agent-inject: "true"
        vault.hashicorp.com/role: "orders"
        # The database credential, as a URL.
        vault.hashicorp.com/agent-inject-secret-db.url: "database/creds/orders"
        vault.hashicorp.com/agent-inject-template-db.url: |
          {{- with secret "database/creds/orders" -}}
          postgres://{{ .Data.username }}:{{ .Data.password }}@db:5432/orders

          {{- end }}
        vault.hashicorp.com/agent-cache-enable: "true"
        team: payments
    spec:
      containers:
        - name: app
          image: orders:1.2 # pinned
"#;

    #[test]
    fn annotations_are_rewritten_in_place_keeping_comments_and_the_rest() {
        let (out, report) = migrate(DEPLOYMENT).unwrap();
        assert_eq!(report.len(), 1);
        let m = &report[0];
        assert!(m.refused.is_empty() && !m.reserialized, "{m:?}");
        assert_eq!(m.removed, 5);
        assert!(m.notes.iter().any(|n| n.contains("agent-cache-enable")), "{:?}", m.notes);
        for kept in [
            "# The orders service.",
            "app: orders # the selector",
            "# The database credential, as a URL.",
            "prometheus.io/scrape: \"true\"",
            "team: payments",
            "image: orders:1.2 # pinned",
        ] {
            assert!(out.contains(kept), "{kept} lost:\n{out}");
        }
        assert!(!out.contains("vault.hashicorp.com"), "{out}");
        let doc = &yaml::parse_documents(&out).unwrap()[0];
        let t = &doc["spec"]["template"]["metadata"];
        assert_eq!(t["labels"]["sidekey.dev/inject"], "true");
        let a = &t["annotations"];
        assert_eq!(a["sidekey.dev/secret-db.url"], "vault:database/creds/orders");
        assert_eq!(a["sidekey.dev/format-db.url"], "go-template");
        // The template is the same string, blank line and all.
        let original = &yaml::parse_documents(DEPLOYMENT).unwrap()[0]["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(a["sidekey.dev/template-db.url"], original["vault.hashicorp.com/agent-inject-template-db.url"]);
        assert_eq!(a["sidekey.dev/mount-path"], "/vault/secrets");
        // Again: nothing left to do.
        let (again, report) = migrate(&out).unwrap();
        assert_eq!(again, out);
        assert!(report.is_empty());
    }

    #[test]
    fn the_openbao_injectors_prefixes_migrate_as_vault_k8s_does() {
        let (vault, _) = migrate(DEPLOYMENT).unwrap();
        for prefix in ["openbao.openbao.org/", "openbao.org/"] {
            let (out, report) = migrate(&DEPLOYMENT.replace(super::super::PREFIX, prefix)).unwrap();
            assert_eq!(out, vault, "{prefix}");
            assert!(report[0].refused.is_empty() && report[0].removed > 0, "{report:?}");
        }
    }

    #[test]
    fn refused_workloads_are_left_as_they_are_and_say_why() {
        let text = DEPLOYMENT.replace("agent-cache-enable", "agent-configmap");
        let (out, report) = migrate(&text).unwrap();
        assert_eq!(out, text);
        assert!(report[0].refused.iter().any(|r| r.contains("vault.hashicorp.com/agent-configmap")), "{report:?}");
        // What the injector would refuse once translated, named as written.
        let text = DEPLOYMENT.replace(
            "vault.hashicorp.com/agent-cache-enable: \"true\"",
            "vault.hashicorp.com/agent-inject-command-db.url: \"kill -HUP 1\"",
        );
        let (out, report) = migrate(&text).unwrap();
        assert_eq!(out, text);
        assert!(report[0].refused.iter().any(|r| r.contains("shareProcessNamespace")), "{report:?}");
    }

    #[test]
    fn labels_that_are_not_a_mapping_are_refused_not_a_panic() {
        // Found by the fuzzer: `labels: app:pg dump` is a string.
        let text = DEPLOYMENT.replace("labels:\n        app: orders # the selector", "labels: app:orders");
        let (out, report) = migrate(&text).unwrap();
        assert_eq!(out, text);
        assert!(report[0].refused[0].contains("metadata.labels"), "{report:?}");
    }

    #[test]
    fn flow_style_annotations_are_written_anew_and_say_so() {
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: {vault.hashicorp.com/agent-inject: \"true\", vault.hashicorp.com/agent-inject-secret-a: kv/a}\nspec:\n  containers: [{name: app, image: x}]\n";
        let (out, report) = migrate(text).unwrap();
        let doc = &yaml::parse_documents(&out).unwrap()[0];
        assert_eq!(doc["metadata"]["annotations"]["sidekey.dev/secret-a"], "vault:kv/a");
        assert!(report[0].reserialized, "{report:?}");
    }
}
