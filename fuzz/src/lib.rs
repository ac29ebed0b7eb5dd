//! Fuzz targets for every parser that reads other people's input: the
//! webhook's AdmissionReview handler, the annotation parser, the reference
//! grammar, the YAML reader, the agent config, the migrate rewriter, the Go
//! template engine and the vault-k8s translation.
//!
//! Each target is a plain function from bytes to nothing that panics when
//! an invariant breaks, so the same code runs under libFuzzer
//! (`fuzz_targets/`, built by `scripts/fuzz.sh` with coverage
//! instrumentation on the stable toolchain) and in the corpus replay test
//! that `make test` runs (`tests/replay.rs`). The invariants are stated next
//! to each target; "does not panic, hang or allocate past the bound" holds
//! for all of them (`alloc::Bounded`, libFuzzer's `-timeout`).

use std::sync::OnceLock;

use base64::Engine;
use serde_json::{Map, Value};
use sidekey::agent_config::AgentConfig;
use sidekey::config::InjectorConfig;
use sidekey::reference::Reference;
use sidekey::{annotations, migrate as mig, patch, yaml};

pub mod alloc;

/// The webhook handler, bytes in, response out. The answer is 200 or 400;
/// a 200 is an AdmissionReview echoing the request's uid; a patch applies
/// to the pod it was computed from; the answer's size is bounded by the
/// request's (the denial message lists at most 20 problems); every warning
/// fits kubectl's 120 characters.
pub fn admission(data: &[u8]) {
    let config = admission_config();
    let reply = sidekey_injector::review::review(data, config);
    assert!(
        reply.body.len() <= 256 * 1024 + 4 * data.len(),
        "a {}-byte request got a {}-byte answer",
        data.len(),
        reply.body.len()
    );
    let answer: Value = serde_json::from_slice(&reply.body).expect("the answer is JSON");
    match reply.status {
        400 => assert!(answer["error"].is_string(), "a 400 says why"),
        200 => {
            // Read as leniently as the handler does: fields it skips may hold
            // anything the JSON grammar lets through.
            let review: Review = serde_json::from_slice(data).expect("a 200 answers an AdmissionReview");
            let request = review.request.expect("a 200 answers a request");
            let response = &answer["response"];
            assert_eq!(answer["kind"], "AdmissionReview");
            assert_eq!(response["uid"].as_str(), Some(request.uid.as_str()), "the uid is echoed");
            assert!(response["allowed"].is_boolean());
            for w in response["warnings"].as_array().into_iter().flatten() {
                let w = w.as_str().expect("a warning is a string");
                assert!(w.chars().count() <= 120, "a {}-character warning: {w}", w.chars().count());
            }
            if let Some(p) = response["patch"].as_str() {
                assert_eq!(response["patchType"], "JSONPatch");
                assert_eq!(response["allowed"], true);
                let bytes = base64::engine::general_purpose::STANDARD.decode(p).expect("the patch is base64");
                let ops: patch::Patch = serde_json::from_slice(&bytes).expect("the patch is a JSON Patch");
                let raw = request.object.expect("a patch is for an object");
                let mut pod: Value = serde_json::from_str(raw.get()).expect("a patched pod is JSON");
                patch::apply(&mut pod, &ops).expect("the patch applies to the pod it was made for");
            }
        }
        s => panic!("HTTP {s}"),
    }
}

/// The injector config the admission target reviews with: any Vault
/// address and image, vault-k8s annotations translated, and a namespace
/// policy that judges references and template calls (the most code
/// reachable).
pub fn admission_config() -> &'static InjectorConfig {
    static CONFIG: OnceLock<InjectorConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let mut c = InjectorConfig::for_files();
        c.compatibility.vault_k8s = true;
        c.policy.rules.insert(
            0,
            sidekey::config::PolicyRule {
                namespaces: vec!["pay*".into()],
                references: Some(vec!["vault:secret/data/pay/*".into(), "vault:auth/token/lookup-self".into()]),
                writes: Some(vec!["vault:pki/issue/pay-*".into()]),
                ..Default::default()
            },
        );
        c
    })
}

/// The part of an AdmissionReview the checks need.
#[derive(serde::Deserialize)]
struct Review {
    request: Option<ReviewRequest>,
}

#[derive(serde::Deserialize)]
struct ReviewRequest {
    uid: String,
    /// Raw: the handler builds it only for a Pod CREATE, so a skipped
    /// request's object may hold what a `Value` cannot (`1e400`).
    object: Option<Box<serde_json::value::RawValue>>,
}

/// The annotation parser, over `key=value` lines. Never panics; a refusal
/// names at least one problem, and every problem names its field.
pub fn annotations(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut map = Map::new();
    for line in text.lines() {
        let (k, v) = line.split_once('=').unwrap_or((line, ""));
        map.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    let _ = annotations::wants_injection(Some(&map));
    if let Err(problems) = annotations::parse(Some(&map)) {
        assert!(!problems.is_empty(), "a refusal says why");
        assert!(problems.iter().all(|p| !p.field.is_empty() && !p.reason.is_empty()));
    }
}

/// The reference grammar. A reference that parses has one canonical text,
/// which parses back to the same reference.
pub fn reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = sidekey::reference::is_env_reference(text);
    if let Ok(r) = text.parse::<Reference>() {
        let canonical = r.to_string();
        let again: Reference = canonical.parse().expect("the canonical text parses");
        assert_eq!(again, r, "{canonical:?} means something else when read back");
        assert_eq!(again.to_string(), canonical);
        if r.key().is_some() {
            let _ = r.without_key().to_string().parse::<Reference>().expect("without the key it parses");
        }
    }
}

/// Go templates (Vault Agent's): parsing and running any template neither
/// panics nor escapes the limits the agent renders under (the output, the
/// steps, the calls; the heap bound of `alloc::Bounded`); the paths it
/// reads are answered with a fixed secret, writes with their fields, so
/// every construct runs. The calls found without running it are the ones
/// the run makes, at most `MAX_CALLS`.
pub fn gotemplate(data: &[u8]) {
    use sidekey::gotemplate::{Error, MAX_CALLS, MAX_OUTPUT, Resolver, Template};
    struct Any(Vec<(String, usize)>);
    impl Resolver for Any {
        fn secret(&mut self, path: &str, args: &[(String, String)]) -> Result<serde_json::Value, String> {
            if path.is_empty() {
                return Err("empty path".into());
            }
            self.0.push((path.to_owned(), args.len()));
            Ok(serde_json::json!({"Data": {"data": {"k": "v", "n": 1, "l": [1, "a", null], "big": "<&>".repeat(300)},
                "args": args, "certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
                "metadata": {"version": 2, "custom_metadata": null}}, "LeaseID": "", "LeaseDuration": 0}))
        }
    }
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (left, right) = if text.starts_with('[') { ("[[", "]]") } else { ("{{", "}}") };
    match Template::parse_with(text, left, right) {
        Ok(t) => {
            let calls = t.secret_calls();
            if let Ok(calls) = &calls {
                assert!(calls.len() <= MAX_CALLS, "{} calls", calls.len());
            }
            let mut any = Any(Vec::new());
            match t.render_with(&serde_json::json!({"x": [1, 2]}), &mut any, data.len() % 2 == 1) {
                Ok(out) => assert!(out.len() <= MAX_OUTPUT, "output {} bytes", out.len()),
                Err(Error::Exec(_)) => {}
                Err(e) => panic!("running gave a parse error: {e}"),
            }
            // What the agent would be asked was found beforehand.
            if let Ok(calls) = calls {
                for (path, n) in &any.0 {
                    assert!(calls.iter().any(|c| &c.path == path && c.args.len() == *n), "{path} was not found");
                }
            }
        }
        Err(Error::Parse { line, col, .. }) => assert!(line >= 1 && col >= 1),
        Err(e) => panic!("parsing gave an execution error: {e}"),
    }
}

/// The YAML reader: documents it reads, written by our YAML writer and read
/// again, are the same documents.
pub fn yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(docs) = yaml::parse_documents(text) {
        let written = yaml::to_yaml_stream(&docs);
        let again = yaml::parse_documents(&written).expect("what the writer wrote parses");
        assert_eq!(again, docs, "written as:\n{written}");
    }
}

/// The agent's config (the `SIDEKEY_CONFIG` JSON the injector writes): a
/// config that is accepted serializes to JSON that reads back the same.
pub fn agent_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(config) = AgentConfig::from_json(text) {
        let json = config.to_json();
        let again = AgentConfig::from_json(&json).expect("the written config reads back");
        assert_eq!(again, config);
    }
}

/// The `--to` templates the migrate target picks from (first input byte).
pub const TARGETS: [&str; 4] = [
    "vault:secret/data/{namespace}/{secret}",
    "aws-sm:{namespace}/{secret}",
    "vault:kv/{secret}",
    "aws-sm:arn:aws:secretsmanager:eu-west-1:123456789012:secret:{namespace}-{secret}",
];

/// The migrate rewriter. Its output parses; it differs from the input only
/// by added `sidekey.dev/` annotations and labels; running it again changes
/// nothing.
pub fn migrate(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let to = TARGETS[usize::from(pick) % TARGETS.len()];
    let Ok((out, changes)) = mig::migrate(text, to) else { return };
    let before = yaml::parse_documents(text).expect("migrate read it");
    let after = yaml::parse_documents(&out).expect("migrate's output parses");
    assert_eq!(before.len(), after.len(), "documents added or lost");
    for (b, a) in before.iter().zip(&after) {
        assert!(only_additions(b, a), "more than sidekey.dev/ keys changed:\n{out}");
    }
    let (again, changes_again) = mig::migrate(&out, to).expect("the output migrates");
    assert!(changes_again.iter().all(|c| c.added.is_empty()), "a second run adds {changes_again:?}");
    assert_eq!(again, out, "a second run changes the text");
    if changes.iter().all(|c| c.added.is_empty()) {
        assert_eq!(out, text, "nothing added, yet the text changed");
    }
}

/// `after` is `before` plus `sidekey.dev/` keys, possibly in new
/// `metadata`/`annotations`/`labels` mappings (or ones that were null).
fn only_additions(before: &Value, after: &Value) -> bool {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            b.iter().all(|(k, bv)| a.get(k).is_some_and(|av| only_additions(bv, av)))
                && a.iter().filter(|(k, _)| !b.contains_key(*k)).all(|(k, v)| added(k, v))
        }
        (Value::Null, Value::Object(a)) => a.iter().all(|(k, v)| added(k, v)),
        (Value::Array(b), Value::Array(a)) => b.len() == a.len() && b.iter().zip(a).all(|(b, a)| only_additions(b, a)),
        _ => before == after,
    }
}

/// A key migrate may add, with a value it may give it.
fn added(key: &str, value: &Value) -> bool {
    match key {
        _ if key.starts_with(sidekey::PREFIX) => value.is_string(),
        "metadata" | "annotations" | "labels" => value.as_object().is_some_and(|o| o.iter().all(|(k, v)| added(k, v))),
        _ => false,
    }
}

/// The vault-k8s translation and `migrate --from vault-k8s`, over any
/// manifest. The rewrite's output parses into as many documents; a second
/// run changes nothing; a refused workload is left as it is. Every
/// translation is sidekey annotations only, goes through the one annotation
/// parser without panicking, and names its problems by the key written.
pub fn vault_k8s(data: &[u8]) {
    use sidekey::vault_k8s::{self as vk, migrate::migrate};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(docs) = yaml::parse_documents(text) else { return };
    for doc in &docs {
        for (_, tp) in sidekey::workload::templates(doc) {
            let Some(a) = doc.pointer(&format!("{tp}/metadata/annotations")).and_then(Value::as_object) else {
                continue;
            };
            match vk::translate(a) {
                Ok(t) => {
                    assert!(t.annotations.keys().all(|k| k.starts_with(sidekey::PREFIX)), "{t:?}");
                    let m: Map<String, Value> =
                        t.annotations.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
                    if let Err(problems) = annotations::parse(Some(&m)) {
                        for p in problems {
                            let p = t.name_origin(p);
                            assert!(p.field.starts_with("annotation "), "{p:?}");
                        }
                    }
                }
                Err(problems) => {
                    assert!(!problems.is_empty());
                    // Named as written: with the pod's injector prefix (or sidekey's).
                    let prefix = vk::prefix_of(Some(a)).unwrap_or(vk::PREFIX);
                    for p in problems.iter().filter_map(|p| p.field.strip_prefix("annotation ")) {
                        assert!(p.starts_with(prefix) || p.starts_with(sidekey::PREFIX), "{p} under {prefix}");
                    }
                }
            }
        }
    }
    let Ok((out, report)) = migrate(text) else { return };
    let after = yaml::parse_documents(&out).expect("the rewrite parses");
    assert_eq!(after.len(), docs.len(), "documents added or lost");
    if report.iter().all(|m| !m.refused.is_empty()) {
        assert_eq!(out, text, "nothing migrated, yet the text changed");
    }
    let (again, _) = migrate(&out).expect("the rewrite migrates");
    assert_eq!(again, out, "a second run changes the text");
}
