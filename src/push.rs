//! `sidekey migrate --push`, the pure part: which Kubernetes Secrets the
//! migrated workloads read, where each one goes, what its value in the store
//! must be, and how that compares with what the store holds — without ever
//! putting a value into a message. The command does the I/O.
//!
//! A Secret becomes one JSON object of strings, `{key: value}`: a Vault KV
//! secret's fields, or a Secrets Manager `SecretString`. The agent renders
//! `#key` of it as exactly the bytes the Secret held, so values must be
//! UTF-8 text (KV and `SecretString` hold text; binary values are refused
//! by name).

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use serde_json::{Map, Value};

use crate::PREFIX;
use crate::migrate::{check_target, expand, secrets_used};
use crate::names::dns_label_problem;
use crate::pod::{EnvSource, PodSpec};
use crate::reference::Reference;
use crate::secret::{SecretBytes, SecretValue};
use crate::workload::{describe, templates};

/// Why a push cannot be planned. Messages name Secrets and keys, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// A Secret manifest that cannot be read.
    #[error("Secret {0}: {1}")]
    BadSecret(String, String),
    /// A Secret the workloads read that is not among the inputs.
    #[error("Secret {secret} (read by {used_by}) is not among the inputs: give its manifest, or use --cluster")]
    Missing {
        /// `namespace/name`.
        secret: String,
        /// The workloads that read it.
        used_by: String,
    },
    /// A key a workload reads that the Secret does not have.
    #[error("Secret {secret} has no key {key:?} (read by {used_by}; it has: {has})")]
    MissingKey {
        /// `namespace/name`.
        secret: String,
        /// The key.
        key: String,
        /// The workloads that read it.
        used_by: String,
        /// The keys it has.
        has: String,
    },
    /// Two different Secrets mapped to one place.
    #[error("Secrets {0} and {1} would both be written to {2}: put {{namespace}} in --to or map them apart")]
    Collision(String, String, String),
    /// `--to` is not usable.
    #[error("{0}")]
    Target(String),
    /// Destinations or namespaces outside what the operator allowed.
    #[error("{}", .0.join("; "))]
    OutOfScope(Vec<String>),
}

/// A Kubernetes Secret's data, decoded.
#[derive(Debug, Clone)]
pub struct SecretData {
    /// Its namespace (`default` when the manifest has none).
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Each key's bytes.
    pub entries: BTreeMap<String, SecretBytes>,
}

impl SecretData {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The value the store must hold: `{key: value}`.
    ///
    /// # Errors
    /// [`PushError::BadSecret`] naming the first key whose value is not UTF-8.
    pub fn payload(&self) -> Result<SecretValue, PushError> {
        let mut map = Map::new();
        for (k, v) in &self.entries {
            let text = std::str::from_utf8(v.expose_secret()).map_err(|_| {
                PushError::BadSecret(
                    self.id(),
                    format!(
                        "the value of key {k:?} is binary ({} bytes, not UTF-8): Vault KV and Secrets Manager \
                         SecretString hold text, so it cannot be rendered byte for byte; store it yourself \
                         (e.g. base64-encoded, with a template that decodes it)",
                        v.len()
                    ),
                )
            })?;
            map.insert(k.clone(), Value::String(text.to_owned()));
        }
        Ok(SecretValue::new(Value::Object(map)))
    }
}

/// Reads every `v1 Secret` in `docs` (items of `v1 List`s too): `data`
/// decoded from base64, `stringData` on top, as the API server does.
///
/// # Errors
/// [`PushError::BadSecret`] for data that is not base64 or not a string.
pub fn secret_manifests(docs: &[Value]) -> Result<Vec<SecretData>, PushError> {
    let mut out = Vec::new();
    for doc in docs {
        let items: Vec<&Value> = if doc["apiVersion"] == "v1" && doc["kind"] == "List" {
            doc["items"].as_array().into_iter().flatten().collect()
        } else {
            vec![doc]
        };
        for o in items {
            if o["apiVersion"] != "v1" || o["kind"] != "Secret" {
                continue;
            }
            let namespace = o.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default").to_owned();
            let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
            let id = format!("{namespace}/{name}");
            let mut entries = BTreeMap::new();
            for (k, v) in o["data"].as_object().into_iter().flatten() {
                let bytes = v
                    .as_str()
                    .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                    .ok_or_else(|| PushError::BadSecret(id.clone(), format!("data.{k}: not base64")))?;
                entries.insert(k.clone(), SecretBytes::new(bytes));
            }
            for (k, v) in o["stringData"].as_object().into_iter().flatten() {
                let s = v
                    .as_str()
                    .ok_or_else(|| PushError::BadSecret(id.clone(), format!("stringData.{k}: not a string")))?;
                entries.insert(k.clone(), SecretBytes::new(s.as_bytes().to_vec()));
            }
            out.push(SecretData { namespace, name, entries });
        }
    }
    Ok(out)
}

/// One Secret the workloads read, and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The Secret's namespace.
    pub namespace: String,
    /// The Secret's name.
    pub secret: String,
    /// Where its value goes: the workload's `sidekey.dev/map-<secret>`
    /// annotation when it has one, `--to` filled in otherwise.
    pub reference: String,
    /// Keys read through `secretKeyRef` (not `optional`): they must exist.
    pub required_keys: BTreeSet<String>,
    /// The workloads that read it, for messages.
    pub used_by: Vec<String>,
    /// Where `reference` came from.
    pub origin: Origin,
}

/// Where a destination's reference came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// `--to`, filled in.
    Template,
    /// The `sidekey.dev/map-<secret>` annotation of this workload.
    Annotation(String),
}

impl Destination {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.secret)
    }
}

/// The Secrets the pod templates in `docs` read through env, with their
/// destination, sorted by destination. Secrets whose names cannot be an
/// annotation key are left out (`migrate` reports them).
///
/// # Errors
/// [`PushError::Target`] for a bad `--to`; [`PushError::Collision`] when two
/// Secrets would land in one place.
pub fn destinations(docs: &[Value], to: &str) -> Result<Vec<Destination>, PushError> {
    check_target(to).map_err(|e| PushError::Target(e.to_string()))?;
    let mut by_secret: BTreeMap<(String, String), Destination> = BTreeMap::new();
    for doc in docs {
        for (object_pointer, tp) in templates(doc) {
            let Some(template) = doc.pointer(&tp) else { continue };
            let object = doc.pointer(&object_pointer).unwrap_or(doc);
            let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
            let annotations = template.pointer("/metadata/annotations");
            for s in secrets_used(template) {
                if dns_label_problem(&s).is_some() {
                    continue;
                }
                let (reference, origin) =
                    match annotations.and_then(|a| a.get(format!("{PREFIX}map-{s}"))).and_then(Value::as_str) {
                        Some(r) => (r.to_owned(), Origin::Annotation(describe(object))),
                        None => (expand(to, namespace, &s), Origin::Template),
                    };
                let d = by_secret.entry((namespace.to_owned(), s.clone())).or_insert_with(|| Destination {
                    namespace: namespace.to_owned(),
                    secret: s.clone(),
                    reference,
                    required_keys: BTreeSet::new(),
                    used_by: Vec::new(),
                    origin,
                });
                d.used_by.push(describe(object));
                d.required_keys.extend(required_keys(template, &s));
            }
        }
    }
    let mut out: Vec<Destination> = by_secret.into_values().collect();
    out.sort_by(|a, b| a.reference.cmp(&b.reference).then(a.id().cmp(&b.id())));
    for pair in out.windows(2) {
        if pair[0].reference == pair[1].reference {
            return Err(PushError::Collision(pair[0].id(), pair[1].id(), pair[0].reference.clone()));
        }
    }
    Ok(out)
}

/// What `--push` may touch, chosen by the operator and not by the
/// manifests: references under `--to` for the workload's own namespace (the
/// template's text before `{secret}`, `{namespace}` filled in) or under an
/// `--allow-destination` prefix, and Secrets in the `--namespace`s given. A
/// manifest from a pull request could otherwise point a
/// `sidekey.dev/map-*` annotation anywhere the operator's store credentials
/// reach, or (with `--cluster`) name any namespace's Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `--to`.
    pub to: String,
    /// `--allow-destination` prefixes.
    pub allowed: Vec<String>,
    /// The namespaces whose Secrets may be read; `None`: any.
    pub namespaces: Option<BTreeSet<String>>,
}

impl Scope {
    /// The scope of `--to` with the allowed prefixes and namespaces.
    pub fn new(to: &str, allowed: &[String], namespaces: &[String]) -> Self {
        let namespaces = (!namespaces.is_empty()).then(|| namespaces.iter().cloned().collect());
        Scope { to: to.to_owned(), allowed: allowed.to_vec(), namespaces }
    }

    /// The prefix `--to` gives a Secret in `namespace`.
    fn prefix(&self, namespace: &str) -> String {
        let before = self.to.split("{secret}").next().unwrap_or_default();
        before.split("{namespace}").collect::<Vec<_>>().join(namespace)
    }

    /// `references under P (from --to), Q; Secrets in namespace a, b` for
    /// reports.
    pub fn describe(&self) -> String {
        let mut out = format!("references under {} (from --to)", self.prefix("<namespace>"));
        for p in &self.allowed {
            out.push_str(&format!(", {p} (--allow-destination)"));
        }
        match &self.namespaces {
            Some(ns) => {
                out.push_str(&format!("; Secrets in namespace {}", ns.iter().cloned().collect::<Vec<_>>().join(", ")));
            }
            None => out.push_str("; Secrets in any namespace of the inputs"),
        }
        out
    }

    /// Checks every destination.
    ///
    /// # Errors
    /// [`PushError::OutOfScope`] naming each one outside, and why.
    pub fn check(&self, dests: &[Destination]) -> Result<(), PushError> {
        let mut problems = Vec::new();
        for d in dests {
            if let Some(p) = dns_label_problem(&d.namespace) {
                problems.push(format!("Secret {} (read by {}): the namespace {p}", d.id(), d.used_by.join(", ")));
                continue;
            }
            if let Some(ns) = &self.namespaces
                && !ns.contains(&d.namespace)
            {
                problems.push(format!(
                    "Secret {} (read by {}) is in namespace {}, not among --namespace",
                    d.id(),
                    d.used_by.join(", "),
                    d.namespace
                ));
            }
            let own = self.prefix(&d.namespace);
            if !d.reference.starts_with(&own) && !self.allowed.iter().any(|p| d.reference.starts_with(p.as_str())) {
                let from = match &d.origin {
                    Origin::Template => "--to".to_owned(),
                    Origin::Annotation(o) => format!("the {PREFIX}map-{} annotation of {o}", d.secret),
                };
                problems.push(format!(
                    "Secret {} would be written to {} (from {from}), which is not under {}: add \
                     --allow-destination with a prefix of it to allow that",
                    d.id(),
                    d.reference,
                    [own].iter().chain(&self.allowed).cloned().collect::<Vec<_>>().join(" or ")
                ));
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(PushError::OutOfScope(problems)) }
    }
}

fn required_keys(template: &Value, secret: &str) -> Vec<String> {
    let pod = PodSpec::of_template(template);
    let refs = pod.app_containers().flat_map(|c| c.env()).filter_map(|e| match e.source {
        EnvSource::SecretKeyRef(r) if r.secret == Some(secret) && !r.optional => r.key,
        _ => None,
    });
    refs.map(str::to_owned).collect()
}

/// Pairs each destination with its Secret's value, checking that every key
/// the workloads read is there.
///
/// # Errors
/// [`PushError::Missing`], [`PushError::MissingKey`], [`PushError::BadSecret`].
pub fn resolve(dests: &[Destination], secrets: &[SecretData]) -> Result<Vec<(Reference, SecretValue)>, PushError> {
    let mut out = Vec::new();
    for d in dests {
        let used_by = d.used_by.join(", ");
        let Some(s) = secrets.iter().find(|s| s.namespace == d.namespace && s.name == d.secret) else {
            return Err(PushError::Missing { secret: d.id(), used_by });
        };
        if let Some(k) = d.required_keys.iter().find(|k| !s.entries.contains_key(*k)) {
            let has = s.entries.keys().cloned().collect::<Vec<_>>().join(", ");
            return Err(PushError::MissingKey { secret: d.id(), key: k.clone(), used_by, has });
        }
        let reference: Reference = d
            .reference
            .parse()
            .map_err(|e| PushError::Target(format!("{} (for Secret {}): {e}", d.reference, d.id())))?;
        out.push((reference, s.payload()?));
    }
    Ok(out)
}

/// How the store's current value compares with the wanted one. Keys only:
/// a changed value is reported by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Comparison {
    /// Nothing there yet.
    Create,
    /// The same keys and values.
    Unchanged,
    /// Something differs.
    Update {
        /// Keys only in the wanted value.
        added: Vec<String>,
        /// Keys in both whose values differ.
        changed: Vec<String>,
        /// Keys only in the store.
        removed: Vec<String>,
    },
}

impl Comparison {
    /// `+a ~b -c`, keys only.
    pub fn summary(&self) -> String {
        match self {
            Comparison::Create => "create".into(),
            Comparison::Unchanged => "unchanged".into(),
            Comparison::Update { added, changed, removed } => {
                let marks = added
                    .iter()
                    .map(|k| format!("+{k}"))
                    .chain(changed.iter().map(|k| format!("~{k}")))
                    .chain(removed.iter().map(|k| format!("-{k}")));
                format!("update ({})", marks.collect::<Vec<_>>().join(" "))
            }
        }
    }
}

/// Compares the store's current value (`None`: absent) with `wanted`.
pub fn compare(current: Option<&SecretValue>, wanted: &SecretValue) -> Comparison {
    let Some(current) = current else { return Comparison::Create };
    let empty = Map::new();
    let cur = current.expose_secret().as_object().unwrap_or(&empty);
    let want = wanted.expose_secret().as_object().unwrap_or(&empty);
    let added: Vec<String> = want.keys().filter(|k| !cur.contains_key(*k)).cloned().collect();
    let removed: Vec<String> = cur.keys().filter(|k| !want.contains_key(*k)).cloned().collect();
    let changed: Vec<String> =
        want.iter().filter(|(k, v)| cur.get(*k).is_some_and(|c| c != *v)).map(|(k, _)| k.clone()).collect();
    if added.is_empty() && removed.is_empty() && changed.is_empty() {
        Comparison::Unchanged
    } else {
        Comparison::Update { added, changed, removed }
    }
}

/// The field names of a payload (not secret), for messages.
pub fn keys(v: &SecretValue) -> String {
    v.field_names().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml;

    const MANIFESTS: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: shop}\ndata:\n  password: aHVudGVyMg==\nstringData:\n  username: app\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: shop}\nspec:\n  template:\n    spec:\n      containers:\n        - name: api\n          image: x\n          env:\n            - name: DB_PASSWORD\n              valueFrom: {secretKeyRef: {name: db, key: password}}\n            - name: OPT\n              valueFrom: {secretKeyRef: {name: db, key: nope, optional: true}}\n";

    fn docs(text: &str) -> Vec<Value> {
        yaml::parse_documents(text).unwrap()
    }

    #[test]
    fn secrets_decode_data_and_string_data() {
        let s = secret_manifests(&docs(MANIFESTS)).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].id(), "shop/db");
        assert_eq!(s[0].entries["password"].expose_secret(), b"hunter2");
        assert_eq!(s[0].entries["username"].expose_secret(), b"app");
        let bad = MANIFESTS.replace("aHVudGVyMg==", "not*base64");
        let e = secret_manifests(&docs(&bad)).unwrap_err();
        assert_eq!(e.to_string(), "Secret shop/db: data.password: not base64");
    }

    #[test]
    fn destinations_and_resolution() {
        let d = docs(MANIFESTS);
        let dests = destinations(&d, "vault:secret/data/{namespace}/{secret}").unwrap();
        assert_eq!(dests.len(), 1);
        assert_eq!(dests[0].reference, "vault:secret/data/shop/db");
        assert_eq!(dests[0].required_keys, BTreeSet::from(["password".to_owned()]));
        assert_eq!(dests[0].used_by, vec!["Deployment shop/api".to_owned()]);
        let resolved = resolve(&dests, &secret_manifests(&d).unwrap()).unwrap();
        assert_eq!(resolved[0].1.expose_secret(), &serde_json::json!({"password": "hunter2", "username": "app"}));
        // A required key the Secret lacks is named, with the keys it has.
        let e = resolve(&dests, &secret_manifests(&docs(&MANIFESTS.replace("password: aHVu", "pw: aHVu"))).unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("has no key \"password\"") && e.to_string().contains("pw, username"), "{e}");
        // A Secret not among the inputs.
        let e = resolve(&dests, &[]).unwrap_err();
        assert!(matches!(e, PushError::Missing { .. }), "{e}");
    }

    #[test]
    fn an_existing_map_annotation_wins_and_collisions_are_refused() {
        let text = MANIFESTS.replace(
            "    spec:\n      containers:",
            "    metadata:\n      annotations: {sidekey.dev/map-db: 'aws-sm:prod/db'}\n    spec:\n      containers:",
        );
        let dests = destinations(&docs(&text), "vault:kv/{secret}").unwrap();
        assert_eq!(dests[0].reference, "aws-sm:prod/db");
        let two = format!("{MANIFESTS}---\n{}", MANIFESTS.split("---\n").nth(1).unwrap().replace("shop", "shop2"));
        let e = destinations(&docs(&two), "vault:kv/{secret}").unwrap_err();
        assert!(matches!(e, PushError::Collision(..)), "{e}");
        assert!(destinations(&docs(&two), "vault:kv/{namespace}/{secret}").is_ok());
    }

    #[test]
    fn destinations_outside_the_operators_scope_are_refused_by_name() {
        // A manifest points its map annotation at another team's path, and
        // a second workload names a namespace the operator did not choose.
        let text = MANIFESTS.replace(
            "    spec:\n      containers:",
            "    metadata:\n      annotations: {sidekey.dev/map-db: 'vault:secret/data/admin/root'}\n    spec:\n      containers:",
        );
        let other =
            MANIFESTS.split("---\n").nth(1).unwrap().replace("shop", "kube-system").replace("name: db", "name: admin");
        let d = docs(&format!("{text}---\n{other}"));
        let to = "vault:secret/data/{namespace}/{secret}";
        let dests = destinations(&d, to).unwrap();
        let e = Scope::new(to, &[], &["shop".into()]).check(&dests).unwrap_err().to_string();
        assert!(
            e.contains("Secret shop/db would be written to vault:secret/data/admin/root (from the sidekey.dev/map-db annotation of Deployment shop/api), which is not under vault:secret/data/shop/"),
            "{e}"
        );
        assert!(e.contains("Secret kube-system/admin (read by Deployment kube-system/api) is in namespace kube-system, not among --namespace"), "{e}");
        // Allowed explicitly: fine.
        let scope = Scope::new(to, &["vault:secret/data/admin/".into()], &["shop".into(), "kube-system".into()]);
        scope.check(&dests).unwrap();
        assert_eq!(
            scope.describe(),
            "references under vault:secret/data/<namespace>/ (from --to), vault:secret/data/admin/ (--allow-destination); Secrets in namespace kube-system, shop"
        );
        // A namespace that is not a name is refused, whatever the scope.
        let odd = docs(&MANIFESTS.replace("namespace: shop}\nspec", "namespace: ../x}\nspec"));
        let to = "aws-sm:{namespace}/{secret}";
        let e = Scope::new(to, &[], &[]).check(&destinations(&odd, to).unwrap()).unwrap_err().to_string();
        assert!(e.contains("Secret ../x/db (read by Deployment ../x/api): the namespace"), "{e}");
    }

    #[test]
    fn binary_values_are_refused_by_key_without_the_value() {
        let mut s = secret_manifests(&docs(MANIFESTS)).unwrap().remove(0);
        s.entries.insert("blob".into(), SecretBytes::new(vec![0xff, 0xfe, b'x']));
        let e = s.payload().unwrap_err().to_string();
        assert!(e.contains("\"blob\"") && e.contains("3 bytes"), "{e}");
    }

    #[test]
    fn comparison_names_keys_only() {
        let want = SecretValue::new(serde_json::json!({"a": "1", "b": "2"}));
        assert_eq!(compare(None, &want), Comparison::Create);
        assert_eq!(
            compare(Some(&SecretValue::new(serde_json::json!({"a": "1", "b": "2"}))), &want),
            Comparison::Unchanged
        );
        let c = compare(Some(&SecretValue::new(serde_json::json!({"a": "9", "z": "0"}))), &want);
        assert_eq!(c.summary(), "update (+b ~a -z)");
    }
}
