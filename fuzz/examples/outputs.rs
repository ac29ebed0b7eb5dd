//! What every committed fuzz input produces, one hash per input: run it
//! before and after a change that must not change behaviour (a
//! restructuring) and compare the two listings.
//!
//!     cargo run --release -p sidekey-fuzz --example outputs > before.txt
//!
//! Each line is `target input-name hash`, the hash over the target's whole
//! result (the review's answer, the rendered text or error, the
//! translation, the rewritten manifest…).

#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Map, Value};
use sidekey::agent_config::AgentConfig;
use sidekey::gotemplate::{Resolver, Template};
use sidekey::{annotations, yaml};

struct Fixed;

impl Resolver for Fixed {
    fn secret(&mut self, path: &str, args: &[(String, String)]) -> Result<Value, String> {
        Ok(serde_json::json!({"Data": {"data": {"k": "v", "n": 1, "path": path}, "args": args,
            "certificate": "C", "private_key": "K", "issuing_ca": "CA",
            "metadata": {"version": 2}}, "LeaseID": "", "LeaseDuration": 0}))
    }
}

fn output(target: &str, data: &[u8]) -> String {
    let text = String::from_utf8_lossy(data);
    match target {
        "admission" => {
            let r = sidekey_injector::review::review(data, sidekey_fuzz::admission_config());
            format!("{} {}", r.status, String::from_utf8_lossy(&r.body))
        }
        "annotations" => {
            let mut map = Map::new();
            for line in text.lines() {
                let (k, v) = line.split_once('=').unwrap_or((line, ""));
                map.insert(k.to_owned(), Value::String(v.to_owned()));
            }
            format!("{:?}", annotations::parse(Some(&map)))
        }
        "reference" => format!("{:?}", text.parse::<sidekey::reference::Reference>().map(|r| r.to_string())),
        "yaml" => format!("{:?}", yaml::parse_documents(&text)),
        "agent_config" => format!("{:?}", AgentConfig::from_json(&text).map(|c| c.to_json())),
        "migrate" => {
            let Some((&pick, rest)) = data.split_first() else { return String::new() };
            let to = sidekey_fuzz::TARGETS[usize::from(pick) % sidekey_fuzz::TARGETS.len()];
            format!("{:?}", sidekey::migrate::migrate(&String::from_utf8_lossy(rest), to).map(|(o, _)| o))
        }
        "gotemplate" => {
            let (l, r) = if text.starts_with('[') { ("[[", "]]") } else { ("{{", "}}") };
            match Template::parse_with(&text, l, r) {
                Ok(t) => format!(
                    "{:?} {:?}",
                    t.secret_calls(),
                    t.render_with(&serde_json::json!({"x": [1, 2]}), &mut Fixed, data.len() % 2 == 1)
                ),
                Err(e) => e.to_string(),
            }
        }
        "vault_k8s" => {
            let mut out = String::new();
            if let Ok(docs) = yaml::parse_documents(&text) {
                for doc in &docs {
                    for (_, tp) in sidekey::workload::templates(doc) {
                        if let Some(a) = doc.pointer(&format!("{tp}/metadata/annotations")).and_then(Value::as_object) {
                            let t = sidekey::vault_k8s::translate(a);
                            out.push_str(&format!("{:?}", t.map(|t| (t.annotations, t.notes, t.origins))));
                        }
                    }
                }
            }
            out + &format!("{:?}", sidekey::vault_k8s::migrate::migrate(&text).map(|(o, _)| o))
        }
        _ => String::new(),
    }
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut targets: Vec<_> = std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name()).collect();
    targets.sort();
    for t in targets {
        let target = t.to_string_lossy().into_owned();
        let mut inputs: Vec<_> = std::fs::read_dir(root.join(&t)).unwrap().map(|e| e.unwrap().path()).collect();
        inputs.sort();
        for p in inputs {
            let data = std::fs::read(&p).unwrap();
            let mut h = DefaultHasher::new();
            output(&target, &data).hash(&mut h);
            println!("{target} {} {:016x}", p.file_name().unwrap().to_string_lossy(), h.finish());
        }
    }
}
