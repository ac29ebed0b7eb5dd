//! `sidekey migrate`: rewrites workloads so their Kubernetes-Secret env vars
//! come from a secret store through sidekey — it adds the opt-in label and
//! annotation and one `sidekey.dev/map-<secret>` annotation per Secret used
//! in `secretKeyRef` or `envFrom.secretRef`, nothing else.
//!
//! The rewrite inserts text into the original, so comments, key order and
//! formatting survive byte for byte: new lines into block mappings, new
//! `"key": "value"` entries before the `}` of flow mappings (`labels: {app:
//! api}`). The result is parsed back and must mean exactly the intended
//! documents; where it would not (a pod template without `metadata`), that
//! document is re-serialized in its place (its comments are lost; the
//! command says so, naming the workload), and only if that fails too, the
//! whole file.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};

use crate::PREFIX;
use crate::annotations::{Key, Named};
use crate::names::dns_label_problem;
use crate::pod::{Container, EnvSource, Kind, PodSpec, SecretKeyRef};
use crate::workload::templates;
use crate::yaml::{self, NodeKind};

/// Why a migration cannot be done.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The input is not YAML.
    #[error("{0}")]
    Yaml(#[from] yaml::YamlError),
    /// `--to` is not a usable template.
    #[error("--to {0:?}: {1}")]
    Target(String, String),
}

/// What was changed, for the report.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Change {
    /// `Deployment shop/checkout`.
    pub object: String,
    /// The annotations added (`key`, `value`).
    pub added: Vec<(String, String)>,
    /// Secrets that could not be mapped, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Whether this object's template could not be edited in place, so its
    /// document was written anew (its comments and formatting lost).
    pub reserialized: bool,
    /// Whether the whole file had to be written anew (every comment lost).
    pub whole_file: bool,
    /// Why the workload was left as it was: what `inject` (and so the
    /// webhook) would refuse in it once migrated.
    pub refused: Vec<String>,
    /// What the operator should check: a moved variable the container's
    /// well-known image will not read as `<VAR>_FILE`.
    pub notes: Vec<String>,
}

/// Official images whose entrypoints read `<VAR>_FILE` for these variables
/// (their Docker Hub documentation, "Docker Secrets"), and the official
/// redis image, which reads no variables at all.
const FILE_AWARE_IMAGES: [(&str, &[&str]); 4] = [
    ("postgres", &["POSTGRES_PASSWORD", "POSTGRES_USER", "POSTGRES_DB", "POSTGRES_INITDB_ARGS"]),
    ("mysql", &["MYSQL_ROOT_PASSWORD", "MYSQL_ROOT_HOST", "MYSQL_DATABASE", "MYSQL_USER", "MYSQL_PASSWORD"]),
    (
        "mariadb",
        &[
            "MARIADB_ROOT_PASSWORD",
            "MARIADB_ROOT_PASSWORD_HASH",
            "MARIADB_ROOT_HOST",
            "MARIADB_DATABASE",
            "MARIADB_USER",
            "MARIADB_PASSWORD",
            "MARIADB_PASSWORD_HASH",
            "MYSQL_ROOT_PASSWORD",
            "MYSQL_ROOT_HOST",
            "MYSQL_DATABASE",
            "MYSQL_USER",
            "MYSQL_PASSWORD",
        ],
    ),
    ("redis", &[]),
];

/// The official image an image reference names (`postgres:16`,
/// `docker.io/library/postgres@sha256:…`, `mirror.example/library/postgres`).
fn official_image(image: &str) -> Option<&'static str> {
    let path = image.split('@').next().unwrap_or(image);
    let last = path.rsplit('/').next().unwrap_or(path);
    let path = match last.split_once(':') {
        Some((name, _)) => &path[..path.len() - last.len() + name.len()],
        None => path,
    };
    FILE_AWARE_IMAGES
        .iter()
        .map(|(name, _)| *name)
        .find(|name| path == *name || path == format!("library/{name}") || path.ends_with(&format!("/library/{name}")))
}

/// Notes for the variables of `template` read from the `mapped` Secrets that
/// become `<VAR>_FILE` (env mode `file`) in a container whose official image
/// will not read that.
fn file_convention_notes(template: &Value, mapped: &BTreeSet<String>) -> Vec<String> {
    let mode = template.pointer("/metadata/annotations").and_then(|a| a.get(format!("{PREFIX}env")));
    if mode.and_then(Value::as_str).is_some_and(|m| m != "file") {
        return Vec::new();
    }
    let mut notes = Vec::new();
    for c in PodSpec::of_template(template).app_containers() {
        let Some(image) = official_image(c.image()) else { continue };
        let reads = FILE_AWARE_IMAGES.iter().find(|(n, _)| *n == image).map_or(&[][..], |(_, v)| *v);
        for e in c.env() {
            let EnvSource::SecretKeyRef(SecretKeyRef { secret: Some(from), .. }) = e.source else { continue };
            let var = e.name;
            if !mapped.contains(from) || reads.contains(&var) {
                continue;
            }
            let name = c.name();
            notes.push(if reads.is_empty() {
                format!(
                    "container {name}: the official {image} image reads no env vars, so {var} is read by your command or script, which must now read the file named in {var}_FILE (or set {PREFIX}env: exec)"
                )
            } else {
                format!(
                    "container {name}: {var} becomes {var}_FILE, which the official {image} image does not read (it reads _FILE for {}): set {PREFIX}env: exec, or keep {var} out of the migration",
                    reads.join(", ")
                )
            });
        }
    }
    notes
}

/// Checks the `--to` template: a reference with `{secret}` (and usually
/// `{namespace}`), no `#key` (each `secretKeyRef.key` is appended).
///
/// # Errors
/// [`MigrateError::Target`].
pub fn check_target(to: &str) -> Result<(), MigrateError> {
    if !to.contains("{secret}") {
        return Err(MigrateError::Target(to.into(), "must contain {secret}".into()));
    }
    let sample = expand(to, "default", "sample");
    let r: crate::reference::Reference =
        sample.parse().map_err(|e: crate::reference::ReferenceError| MigrateError::Target(to.into(), e.to_string()))?;
    if r.key().is_some() {
        return Err(MigrateError::Target(to.into(), "must not have a #key".into()));
    }
    Ok(())
}

pub(crate) fn expand(to: &str, namespace: &str, secret: &str) -> String {
    to.replace("{namespace}", namespace).replace("{secret}", secret)
}

/// The Secrets a pod template reads through env (`secretKeyRef`, `envFrom`).
pub fn secrets_used(template: &Value) -> Vec<String> {
    let pod = PodSpec::of_template(template);
    let mut out: Vec<String> = pod.app_containers().flat_map(|c| c.secrets_read()).map(str::to_owned).collect();
    out.sort();
    out.dedup();
    out
}

/// Where a mapping is in the text: its start (line 1-based, column) and,
/// for a flow mapping (`{…}`), the char index of its closing `}`.
#[derive(Debug, Clone, Copy)]
struct Pos {
    line: usize,
    col: usize,
    flow: bool,
    flow_end: Option<usize>,
    /// An empty value (`annotations:` with nothing after it, as Helm
    /// renders an empty block): its key's column; entries go on the lines
    /// after it, indented two more.
    empty_key_col: Option<usize>,
    /// An alias (`labels: *l`): its char range, replaced by a flow mapping
    /// that merges it (`{<<: *l, "sidekey.dev/inject": "true"}`), so the
    /// anchored mapping (often the selector's) is not changed.
    alias: Option<(usize, usize)>,
}

/// Per document: where each mapping, empty value and aliased value is, by
/// JSON pointer (the last one wins, as with duplicate keys), and the char
/// range a rewrite of that one document replaces.
fn mapping_positions(text: &str) -> Vec<(HashMap<String, Pos>, (usize, usize))> {
    let located = |n: yaml::Located| {
        let at = Pos { line: n.line, col: n.col, flow: false, flow_end: None, empty_key_col: None, alias: None };
        let pos = match n.kind {
            NodeKind::Key => return None,
            NodeKind::Mapping { flow, flow_end } => Pos { flow, flow_end, ..at },
            NodeKind::EmptyValue { key_col } => Pos { empty_key_col: Some(key_col), ..at },
            NodeKind::Alias { start, end } => Pos { alias: Some((start, end)), ..at },
        };
        Some((n.pointer, pos))
    };
    yaml::positions(text)
        .into_iter()
        .map(|doc| (doc.nodes.into_iter().filter_map(located).collect(), doc.range))
        .collect()
}

/// Runs the injection on `template` with the annotations (and label)
/// migrate would add, as `sidekey inject` does with its built-in config.
/// Init containers that read a Secret through env need the secrets volume,
/// which by default only the app containers get: when the template names
/// no containers itself, `sidekey.dev/containers` listing them is added.
/// Returns the extra annotations, or what inject would still refuse.
fn inject_check(
    template: &Value,
    add: &[(String, String)],
    add_label: bool,
) -> Result<Vec<(String, String)>, Vec<String>> {
    let config = crate::config::InjectorConfig::for_files();
    let mut candidate = template.clone();
    if let Some(t) = candidate.as_object_mut() {
        let meta = t.entry("metadata").or_insert_with(|| json!({}));
        if meta.is_null() {
            *meta = json!({});
        }
        for (k, v) in add {
            meta["annotations"][k] = json!(v);
        }
        if add_label {
            meta["labels"][Key::Inject.key()] = json!("true");
        }
    }
    let attempt = |c: &Value| crate::mutate::mutate_template(&mut c.clone(), &config).map(|_| ());
    let Err(first) = attempt(&candidate) else { return Ok(Vec::new()) };
    let has_list = candidate["metadata"]["annotations"].get(format!("{PREFIX}containers")).is_some();
    let pod = PodSpec::of_template(&candidate);
    let readers: Vec<&str> =
        pod.containers(&[Kind::Init]).filter(|c| c.secrets_read().next().is_some()).filter_map(named).collect();
    if !has_list && !readers.is_empty() {
        let apps = pod.containers(&[Kind::Regular]).filter_map(named);
        let list = readers.into_iter().chain(apps).collect::<Vec<_>>().join(",");
        let extra = vec![(format!("{PREFIX}containers"), list)];
        candidate["metadata"]["annotations"][&extra[0].0] = json!(extra[0].1);
        return match attempt(&candidate) {
            Ok(()) => Ok(extra),
            Err(e) => Err(e.problems.iter().map(ToString::to_string).collect()),
        };
    }
    Err(first.problems.iter().map(ToString::to_string).collect())
}

/// A container's name, when it has one.
fn named<'a>(c: Container<'a>) -> Option<&'a str> {
    c.field("name").and_then(Value::as_str)
}

/// One line `key: value` as the YAML writer quotes it.
fn entry(key: &str, value: &str) -> String {
    yaml::to_yaml(&json!({ key: value })).trim_end().to_owned()
}

/// Rewrites `text`, mapping every Secret used in env to `to`
/// (`{namespace}` and `{secret}` are filled in). Returns the new text and
/// what changed; objects that need nothing are left as they are, so running
/// it twice changes nothing.
///
/// # Errors
/// [`MigrateError`] for YAML that does not parse or a bad `--to`.
pub fn migrate(text: &str, to: &str) -> Result<(String, Vec<Change>), MigrateError> {
    check_target(to)?;
    let docs = yaml::parse_documents(text)?;
    let positions = mapping_positions(text);
    let src = Text::new(text);
    let mut changes = Vec::new();
    let mut edits = Edits::default();
    let mut reserialize = false;
    let mut new_docs = docs.clone();
    for (di, doc) in docs.iter().enumerate() {
        let (pos, range) = positions.get(di).cloned().unwrap_or_default();
        let mut doc_edits = Edits::default();
        let mut fallback = false;
        for (object_pointer, tp) in templates(doc) {
            let Some(template) = doc.pointer(&tp) else { continue };
            let plan = match plan_template(doc, &object_pointer, template, to) {
                Planned::Nothing => continue,
                Planned::Report(change) => {
                    changes.push(change);
                    continue;
                }
                Planned::Add(plan) => plan,
            };
            plan.add_to(&mut new_docs[di], &tp);
            let ok = src.edit_template(&pos, &tp, &plan, &mut doc_edits);
            fallback |= !ok;
            changes.push(plan.into_change(template, ok));
        }
        if !fallback {
            edits.extend(doc_edits);
        } else if let Some((start, end, new_text)) = src.rewrite_document(doc, &new_docs[di], range) {
            // This one document anew, in its place.
            edits.insert(start, new_text);
            edits.skips.insert(start, end);
        } else {
            reserialize = true;
        }
    }
    if !reserialize {
        let out = src.apply(&edits);
        // The edit must mean exactly the intended documents; anything else
        // (an odd layout the positions did not capture) is written anew.
        if yaml::parse_documents(&out).is_ok_and(|d| d == new_docs) {
            return Ok((out, changes));
        }
    }
    // Rare: metadata the edits cannot reach; write every document anew.
    // `reserialized` names the objects that caused it; when the cause was
    // the check of the edited text, every changed object is named.
    if !changes.iter().any(|c| c.reserialized) {
        for c in &mut changes {
            c.reserialized = true;
        }
    }
    for c in &mut changes {
        c.whole_file = true;
    }
    Ok((yaml::to_yaml_stream(&new_docs), changes))
}

/// `text` with `annotations` (and, with `label`, the `sidekey.dev/inject`
/// label) added to the pod template at `tp` of document `doc`, every other
/// character kept; `None` when that template's metadata is where no
/// insertion can reach. For other rewrites of annotations (`migrate --from
/// vault-k8s`).
pub(crate) fn insert_into_template(
    text: &str,
    doc: usize,
    tp: &str,
    annotations: &[(String, String)],
    label: bool,
) -> Option<String> {
    let positions = mapping_positions(text);
    let (pos, _) = positions.get(doc)?;
    let src = Text::new(text);
    let plan = TemplatePlan {
        object: String::new(),
        secrets: Vec::new(),
        annotations: annotations.to_vec(),
        label,
        skipped: Vec::new(),
    };
    let mut edits = Edits::default();
    src.edit_template(pos, tp, &plan, &mut edits).then(|| src.apply(&edits))
}

/// What to do with one pod template.
enum Planned {
    /// Nothing to map, or all mapped already.
    Nothing,
    /// Nothing added, for a reason the report gives.
    Report(Change),
    /// Add annotations (and the label).
    Add(TemplatePlan),
}

/// The opt-in of one pod template.
struct TemplatePlan {
    object: String,
    secrets: Vec<String>,
    annotations: Vec<(String, String)>,
    label: bool,
    skipped: Vec<(String, String)>,
}

/// Decides what the template at `template` (in `doc`, of the object at
/// `object_pointer`) gets.
fn plan_template(doc: &Value, object_pointer: &str, template: &Value, to: &str) -> Planned {
    let object = crate::workload::describe(doc.pointer(object_pointer).unwrap_or(doc));
    let namespace =
        doc.pointer(&format!("{object_pointer}/metadata/namespace")).and_then(Value::as_str).unwrap_or("default");
    let secrets = secrets_used(template);
    if secrets.is_empty() {
        return Planned::Nothing;
    }
    // Metadata that is there but not a mapping (a scalar where the pod
    // template's labels belong) cannot take the opt-in; the API server
    // would refuse the object anyway.
    let not_mapping = |p: &str| template.pointer(p).is_some_and(|v| !v.is_object() && !v.is_null());
    if let Some(field) = ["/metadata", "/metadata/annotations", "/metadata/labels"].into_iter().find(|p| not_mapping(p))
    {
        let reason = format!("the pod template's {} is not a mapping", field[1..].replace('/', "."));
        let skipped = secrets.iter().map(|s| (s.clone(), reason.clone())).collect();
        return Planned::Report(Change { object, skipped, ..Change::default() });
    }
    let existing = template.pointer("/metadata/annotations").and_then(Value::as_object);
    let mut annotations: Vec<(String, String)> = Vec::new();
    let mut skipped = Vec::new();
    if existing.and_then(|a| a.get(&Key::Inject.key())).is_none() {
        annotations.push((Key::Inject.key(), "true".into()));
    }
    for s in &secrets {
        if let Some(p) = dns_label_problem(s) {
            skipped.push((
                s.clone(),
                format!("the Secret name {p}, so it cannot be a sidekey.dev/map-<secret> annotation"),
            ));
            continue;
        }
        let key = format!("{PREFIX}{}", Named::Map.name(s));
        if !existing.is_some_and(|a| a.contains_key(&key)) {
            annotations.push((key, expand(to, namespace, s)));
        }
    }
    let labels = template.pointer("/metadata/labels").and_then(Value::as_object);
    let label = labels.and_then(|l| l.get(&Key::Inject.key())).is_none();
    // Never opt in a workload that inject (and so the webhook) would then
    // refuse: add what makes it acceptable, or leave it alone.
    match inject_check(template, &annotations, label) {
        Ok(extra) => annotations.extend(extra),
        Err(refused) => return Planned::Report(Change { object, skipped, refused, ..Change::default() }),
    }
    if annotations.is_empty() && !label {
        return if skipped.is_empty() {
            Planned::Nothing
        } else {
            Planned::Report(Change { object, skipped, ..Change::default() })
        };
    }
    Planned::Add(TemplatePlan { object, secrets, annotations, label, skipped })
}

impl TemplatePlan {
    /// Adds the annotations and label to the template at `tp` in `doc`
    /// (the document's new value, for the checks and the fallback).
    fn add_to(&self, doc: &mut Value, tp: &str) {
        let Some(t) = doc.pointer_mut(tp).and_then(Value::as_object_mut) else { return };
        let meta = t.entry("metadata").or_insert_with(|| json!({}));
        if meta.is_null() {
            *meta = json!({});
        }
        let Some(meta) = meta.as_object_mut() else { return };
        let ann = meta.entry("annotations").or_insert_with(|| json!({}));
        for (k, v) in &self.annotations {
            ann[k] = json!(v);
        }
        if self.label {
            meta.entry("labels").or_insert_with(|| json!({}))[Key::Inject.key()] = json!("true");
        }
    }

    /// The report of what was added; `edited`: by insertions into the text.
    fn into_change(self, template: &Value, edited: bool) -> Change {
        let mut added = self.annotations;
        if self.label {
            added.push((format!("label {PREFIX}inject"), "true".into()));
        }
        let mapped: BTreeSet<String> =
            self.secrets.iter().filter(|s| dns_label_problem(s).is_none()).cloned().collect();
        let notes = file_convention_notes(template, &mapped);
        Change { object: self.object, added, skipped: self.skipped, reserialized: !edited, notes, ..Change::default() }
    }
}

/// Text insertions, and the text some of them replace.
#[derive(Default)]
struct Edits {
    /// Char index (insert before) → texts, in order.
    inserts: BTreeMap<usize, Vec<String>>,
    /// Char index → end of the text the insertion there replaces.
    skips: HashMap<usize, usize>,
}

impl Edits {
    fn insert(&mut self, at: usize, text: String) {
        self.inserts.entry(at).or_default().push(text);
    }

    fn extend(&mut self, other: Edits) {
        for (at, texts) in other.inserts {
            self.inserts.entry(at).or_default().extend(texts);
        }
        self.skips.extend(other.skips);
    }
}

/// The input text, as chars and lines.
struct Text {
    chars: Vec<char>,
    line_starts: Vec<usize>,
    /// New lines end like the file's own (a CRLF file stays CRLF).
    nl: &'static str,
}

impl Text {
    fn new(text: &str) -> Self {
        let chars: Vec<char> = text.chars().collect();
        let mut line_starts = vec![0];
        line_starts.extend(chars.iter().enumerate().filter(|(_, c)| **c == '\n').map(|(i, _)| i + 1));
        let nl = if text.contains("\r\n") { "\r\n" } else { "\n" };
        Text { chars, line_starts, nl }
    }

    /// Inserts the plan's annotations and label into the template at `tp`;
    /// false when its metadata is where no insertion can reach.
    fn edit_template(&self, pos: &HashMap<String, Pos>, tp: &str, plan: &TemplatePlan, edits: &mut Edits) -> bool {
        let at = |p: &str| pos.get(&format!("{tp}{p}")).copied();
        let meta = at("/metadata");
        let mut ok = plan.annotations.is_empty()
            || self.edit(at("/metadata/annotations"), meta, "annotations", &plan.annotations, edits);
        if plan.label {
            ok &= self.edit(at("/metadata/labels"), meta, "labels", &[(Key::Inject.key(), "true".into())], edits);
        }
        ok
    }

    /// Adds `entries` to the mapping at `target` (block or flow, empty, an
    /// alias), or as a new `key` in `meta`; false when neither is possible.
    fn edit(
        &self,
        target: Option<Pos>,
        meta: Option<Pos>,
        key: &str,
        entries: &[(String, String)],
        edits: &mut Edits,
    ) -> bool {
        let (chars, nl) = (&self.chars, self.nl);
        let flow_items = || entries.iter().map(|(k, v)| flow_entry(k, v)).collect::<Vec<_>>().join(", ");
        // A multi-line value (a block scalar) is indented as a whole.
        let block_lines = |col: usize| {
            let pad = " ".repeat(col);
            entries
                .iter()
                .map(|(k, v)| format!("{pad}{}{nl}", entry(k, v).replace('\n', &format!("{nl}{pad}"))))
                .collect::<String>()
        };
        let line_start = |line: usize| self.line_starts.get(line - 1).copied().unwrap_or(chars.len());
        match (target, meta) {
            (Some(Pos { alias: Some((start, end)), .. }), _) if end > start && end <= chars.len() => {
                let alias: String = chars[start..end].iter().collect();
                let alias = alias.trim_end();
                edits.insert(start, format!("{{<<: {alias}, {}}}", flow_items()));
                edits.skips.insert(start, start + alias.chars().count());
            }
            (Some(Pos { empty_key_col: Some(col), line, .. }), _) if line > 0 => {
                let (at, lead) = match self.line_starts.get(line) {
                    Some(&at) => (at, ""),
                    None => (chars.len(), nl),
                };
                edits.insert(at, format!("{lead}{}", block_lines(col + 2)));
            }
            (Some(Pos { flow_end: Some(end), .. }), _) => {
                edits.insert(end, format!("{}{}", flow_separator(chars, end), flow_items()));
            }
            (Some(p), _) if !p.flow && p.line > 0 => edits.insert(line_start(p.line), block_lines(p.col)),
            (None, Some(Pos { flow_end: Some(end), .. })) => {
                edits.insert(end, format!("{}{key}: {{{}}}", flow_separator(chars, end), flow_items()));
            }
            (None, Some(m)) if !m.flow && m.line > 0 => {
                let text = format!("{}{key}:{nl}{}", " ".repeat(m.col), block_lines(m.col + 2));
                edits.insert(line_start(m.line), text);
            }
            _ => return false,
        }
        true
    }

    /// `doc` written anew as `new_doc` in its place, if `range` holds
    /// exactly it: the range to replace and the text.
    fn rewrite_document(
        &self,
        doc: &Value,
        new_doc: &Value,
        (start, end): (usize, usize),
    ) -> Option<(usize, usize, String)> {
        let alone: String = self.chars.get(start..end).map(|c| c.iter().collect()).unwrap_or_default();
        if start >= end || !yaml::parse_documents(&alone).is_ok_and(|d| d.len() == 1 && d[0] == *doc) {
            return None;
        }
        let mut new_text = yaml::to_yaml(new_doc);
        if self.nl == "\r\n" {
            new_text = new_text.replace('\n', "\r\n");
        }
        let trailing: String = alone.chars().rev().take_while(|c| c.is_whitespace()).collect();
        let keep = trailing.chars().rev().collect::<String>();
        let end = end - keep.chars().count();
        Some((start, end, new_text.trim_end().to_owned() + &keep))
    }

    /// The text with `edits` made.
    fn apply(&self, edits: &Edits) -> String {
        let added = edits.inserts.values().flatten().map(String::len).sum::<usize>();
        let mut out = String::with_capacity(self.chars.len() + added);
        let mut next = 0;
        for (at, texts) in &edits.inserts {
            out.extend(&self.chars[next.min(*at)..*at]);
            texts.iter().for_each(|t| out.push_str(t));
            next = next.max(edits.skips.get(at).copied().unwrap_or(*at));
        }
        out.extend(&self.chars[next..]);
        out
    }
}

/// `"key": "value"` for a flow mapping (JSON strings are YAML double-quoted
/// scalars).
fn flow_entry(key: &str, value: &str) -> String {
    format!("{}: {}", Value::from(key), Value::from(value))
}

/// What goes before new entries inserted at `end` (a flow mapping's `}`):
/// nothing after `{` or a trailing comma, `, ` otherwise.
fn flow_separator(chars: &[char], end: usize) -> &'static str {
    match chars[..end].iter().rev().find(|c| !c.is_whitespace()) {
        Some('{' | ',') => "",
        _ => ", ",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOY: &str = "# team's deployment\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: shop\nspec:\n  template:\n    metadata:\n      labels:\n        app: api # the app\n    spec:\n      containers:\n        - name: api\n          image: x\n          env:\n            - name: DB_PASSWORD\n              valueFrom:\n                secretKeyRef: {name: db, key: password}\n          envFrom:\n            - secretRef:\n                name: api-keys\n";

    #[test]
    fn skips_a_template_whose_metadata_is_not_a_mapping() {
        // Found by the migrate fuzz target: the change was reported, the
        // output did not have it, and a second run reported it again.
        for bad in ["    metadata: just-a-string\n", "    metadata:\n      labels: [a]\n"] {
            let text = DEPLOY.replace("    metadata:\n      labels:\n        app: api # the app\n", bad);
            let (out, changes) = migrate(&text, "vault:kv/{secret}").unwrap();
            assert_eq!(out, text);
            assert!(changes[0].added.is_empty(), "{changes:?}");
            assert!(changes[0].skipped.iter().all(|(_, why)| why.contains("is not a mapping")), "{changes:?}");
        }
        let null_meta = DEPLOY.replace("    metadata:\n      labels:\n        app: api # the app\n", "    metadata:\n");
        let (out, changes) = migrate(&null_meta, "vault:kv/{secret}").unwrap();
        assert!(!changes[0].added.is_empty());
        assert_eq!(migrate(&out, "vault:kv/{secret}").unwrap().0, out, "{out}");
    }

    #[test]
    fn adds_opt_in_and_maps_keeping_everything_else() {
        let (out, changes) = migrate(DEPLOY, "vault:secret/data/{namespace}/{secret}").unwrap();
        assert!(out.starts_with("# team's deployment\n"), "{out}");
        assert!(out.contains("        app: api # the app\n"), "{out}");
        let doc = &yaml::parse_documents(&out).unwrap()[0];
        let a = &doc["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(a["sidekey.dev/inject"], "true");
        assert_eq!(a["sidekey.dev/map-db"], "vault:secret/data/shop/db");
        assert_eq!(a["sidekey.dev/map-api-keys"], "vault:secret/data/shop/api-keys");
        assert_eq!(doc["spec"]["template"]["metadata"]["labels"]["sidekey.dev/inject"], "true");
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].reserialized);
        // Every original line is still there, in order.
        let mut it = out.lines();
        for l in DEPLOY.lines() {
            assert!(it.any(|x| x == l), "lost {l:?}");
        }
        // Idempotent.
        let (again, changes) = migrate(&out, "vault:secret/data/{namespace}/{secret}").unwrap();
        assert_eq!(again, out);
        assert!(changes.is_empty());
    }

    #[test]
    fn empty_annotations_and_labels_as_helm_renders_them_get_entries_in_place() {
        for (empty, at_end) in
            [("      annotations:\n      labels:\n", false), ("      labels:\n      annotations:\n", true)]
        {
            let text = DEPLOY.replace("      labels:\n", empty);
            let text = if at_end { text.replace("        app: api # the app\n", "") } else { text };
            let (out, changes) = migrate(&text, "vault:kv/{secret}").unwrap();
            assert!(!changes[0].reserialized, "{out}");
            assert!(out.contains("# team's deployment") && out.contains("app: api # the app") != at_end, "{out}");
            let doc = &yaml::parse_documents(&out).unwrap()[0];
            assert_eq!(
                doc["spec"]["template"]["metadata"]["annotations"]["sidekey.dev/map-db"], "vault:kv/db",
                "{out}"
            );
            assert_eq!(doc["spec"]["template"]["metadata"]["labels"]["sidekey.dev/inject"], "true", "{out}");
            assert_eq!(migrate(&out, "vault:kv/{secret}").unwrap().0, out);
        }
    }

    #[test]
    fn migrate_never_opts_in_what_inject_refuses() {
        // An init container reads the Secret (a Redis HA chart's config-init):
        // it is named in sidekey.dev/containers with the app containers.
        let init = DEPLOY.replace(
            "      containers:\n",
            "      initContainers:\n        - name: config-init\n          image: x\n          env:\n            - name: AUTH\n              valueFrom: {secretKeyRef: {name: redis, key: auth}}\n      containers:\n",
        );
        let (out, changes) = migrate(&init, "vault:kv/{secret}").unwrap();
        assert!(changes[0].refused.is_empty(), "{changes:?}");
        assert!(
            changes[0].added.contains(&("sidekey.dev/containers".to_owned(), "config-init,api".to_owned())),
            "{changes:?}"
        );
        let mut doc = yaml::parse_documents(&out).unwrap().remove(0);
        let config = crate::config::InjectorConfig::for_files();
        crate::workload::mutate_object(&mut doc, &config).unwrap();
        // The secret is used as $(VAR) in args (a stock Redis deployment):
        // the workload is left alone, with inject's reason.
        let expanded = DEPLOY.replace(
            "          image: x\n",
            "          image: x\n          args: [\"--requirepass\", \"$(DB_PASSWORD)\"]\n",
        );
        let (out, changes) = migrate(&expanded, "vault:kv/{secret}").unwrap();
        assert_eq!(out, expanded);
        assert!(changes[0].added.is_empty());
        assert!(changes[0].refused.iter().any(|r| r.contains("$(DB_PASSWORD) in args")), "{changes:?}");
    }

    #[test]
    fn an_aliased_labels_mapping_is_merged_not_changed() {
        // The template's labels are the selector's, through an anchor: the
        // selector must not get the new label, and nothing is rewritten.
        let text = DEPLOY
            .replace("spec:\n  template:\n", "spec:\n  selector:\n    matchLabels: &l\n      app: api\n  template:\n")
            .replace("      labels:\n        app: api # the app\n", "      labels: *l # the selector's\n");
        let (out, changes) = migrate(&text, "vault:kv/{secret}").unwrap();
        assert!(!changes[0].reserialized, "{out}");
        assert!(out.contains(r#"      labels: {<<: *l, "sidekey.dev/inject": "true"} # the selector's"#), "{out}");
        let doc = &yaml::parse_documents(&out).unwrap()[0];
        assert_eq!(doc["spec"]["selector"]["matchLabels"], json!({"app": "api"}));
        assert_eq!(doc["spec"]["template"]["metadata"]["labels"], json!({"app": "api", "sidekey.dev/inject": "true"}));
        assert_eq!(migrate(&out, "vault:kv/{secret}").unwrap().0, out);
    }

    #[test]
    fn well_known_images_that_will_not_read_the_file_are_named() {
        assert_eq!(official_image("postgres:16"), Some("postgres"));
        assert_eq!(official_image("docker.io/library/postgres:16-alpine@sha256:ab"), Some("postgres"));
        assert_eq!(official_image("mirror.example:5000/library/mariadb"), Some("mariadb"));
        assert_eq!(official_image("bitnami/postgresql:16"), None);
        assert_eq!(official_image("example/postgres:16"), None);
        let pod = |image: &str, var: &str| {
            DEPLOY.replace("          image: x\n", &format!("          image: {image}\n")).replace("DB_PASSWORD", var)
        };
        let notes = |text: &str| migrate(text, "vault:kv/{secret}").unwrap().1.remove(0).notes;
        assert!(notes(&pod("postgres:16", "POSTGRES_PASSWORD")).is_empty());
        let n = notes(&pod("postgres:16", "PGPASSWORD"));
        assert!(
            n[0].contains("PGPASSWORD becomes PGPASSWORD_FILE, which the official postgres image does not read"),
            "{n:?}"
        );
        let n = notes(&pod("redis:7", "REDIS_PASSWORD"));
        assert!(n[0].contains("the official redis image reads no env vars"), "{n:?}");
        assert!(notes(&pod("example/app:1", "DB_PASSWORD")).is_empty());
        let exec = pod("postgres:16", "PGPASSWORD")
            .replace("      labels:\n", "      annotations:\n        sidekey.dev/env: exec\n      labels:\n");
        assert!(notes(&exec).is_empty());
    }

    #[test]
    fn a_crlf_file_gets_crlf_lines() {
        let crlf = DEPLOY.replace('\n', "\r\n");
        let (out, changes) = migrate(&crlf, "vault:kv/{secret}").unwrap();
        assert!(!changes[0].reserialized);
        assert!(out.len() > crlf.len());
        assert!(!out.replace("\r\n", "").contains('\n'), "a bare LF was inserted: {out:?}");
        let annotated = DEPLOY.replace("      labels:\n", "      annotations:\n        keep: \"yes\"\n      labels:\n");
        let (out, _) = migrate(&annotated.replace('\n', "\r\n"), "vault:kv/{secret}").unwrap();
        assert!(!out.replace("\r\n", "").contains('\n'), "a bare LF was inserted: {out:?}");
    }

    #[test]
    fn existing_annotations_get_new_entries_in_place() {
        let text = DEPLOY.replace("      labels:\n", "      annotations:\n        keep: \"yes\"\n      labels:\n");
        let (out, _) = migrate(&text, "aws-sm:{namespace}/{secret}").unwrap();
        let doc = &yaml::parse_documents(&out).unwrap()[0];
        let a = &doc["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(a["keep"], "yes");
        assert_eq!(a["sidekey.dev/map-db"], "aws-sm:shop/db");
        assert!(out.contains("        keep: \"yes\"\n"));
    }

    #[test]
    fn flow_style_mappings_get_new_entries_in_place() {
        for (flow, expect) in [
            (
                "    metadata: {labels: {app: api}}\n",
                r#"    metadata: {labels: {app: api, "sidekey.dev/inject": "true"}, annotations: {"sidekey.dev/inject": "true", "sidekey.dev/map-api-keys": "vault:kv/api-keys", "sidekey.dev/map-db": "vault:kv/db"}}"#,
            ),
            (
                "    metadata:\n      labels: {app: api, }\n      annotations: {}\n",
                r#"      labels: {app: api, "sidekey.dev/inject": "true"}"#,
            ),
            (
                "    metadata:\n      labels: {app: api}\n      annotations: {}\n",
                r#"      annotations: {"sidekey.dev/inject": "true", "sidekey.dev/map-api-keys": "vault:kv/api-keys", "sidekey.dev/map-db": "vault:kv/db"}"#,
            ),
        ] {
            let text = format!(
                "# keep me\n{}",
                DEPLOY.replace("    metadata:\n      labels:\n        app: api # the app\n", flow)
            );
            let (out, changes) = migrate(&text, "vault:kv/{secret}").unwrap();
            assert!(!changes[0].reserialized, "{out}");
            assert!(out.starts_with("# keep me\n") && out.contains(expect), "{out}");
            let doc = &yaml::parse_documents(&out).unwrap()[0];
            assert_eq!(doc["spec"]["template"]["metadata"]["annotations"]["sidekey.dev/map-db"], "vault:kv/db");
            assert_eq!(doc["spec"]["template"]["metadata"]["labels"]["app"], "api");
            let (again, changes) = migrate(&out, "vault:kv/{secret}").unwrap();
            assert_eq!(again, out);
            assert!(changes.is_empty());
        }
    }

    #[test]
    fn metadata_that_cannot_be_edited_falls_back_to_rewriting_the_document() {
        let text = DEPLOY.replace("    metadata:\n      labels:\n        app: api # the app\n", "");
        let (out, changes) = migrate(&text, "vault:kv/{secret}").unwrap();
        assert!(changes[0].reserialized);
        let doc = &yaml::parse_documents(&out).unwrap()[0];
        assert_eq!(doc["spec"]["template"]["metadata"]["annotations"]["sidekey.dev/map-db"], "vault:kv/db");
    }

    #[test]
    fn empty_documents_do_not_shift_the_positions() {
        let text = format!("# header only\n---\n{DEPLOY}");
        let (out, _) = migrate(&text, "vault:kv/{secret}").unwrap();
        let doc = &yaml::parse_documents(&out).unwrap()[0];
        assert_eq!(doc["spec"]["template"]["metadata"]["annotations"]["sidekey.dev/map-db"], "vault:kv/db");
    }

    #[test]
    fn refuses_bad_targets_and_skips_unmappable_secret_names() {
        assert!(migrate(DEPLOY, "vault:secret/data/x").is_err());
        assert!(migrate(DEPLOY, "vault:secret/data/{secret}#k").is_err());
        assert!(migrate(DEPLOY, "gcp:{secret}").is_err());
        let text = DEPLOY.replace("name: db,", "name: db.creds,");
        let (_, changes) = migrate(&text, "vault:kv/{secret}").unwrap();
        assert_eq!(changes[0].skipped[0].0, "db.creds");
    }
}
