//! parse + mutate + JSON Patch, the webhook's hot path, for a typical pod,
//! a 20-container pod, a pod written for the Vault Agent injector (with the
//! translation of compatibility mode) and a hostile-sized one (5,000 env
//! vars, ~300 KB).
//! Targets: under 50 µs for the typical pod; linear in size, under 10 ms for
//! the 5,000 env vars.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Value, json};
use sidekey::config::InjectorConfig;
use sidekey::mutate::mutate_template_at;
use std::hint::black_box;
// The injector's allocator, so the numbers are the injector's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The typical pod: corpus file 01 (a restricted pod with env and annotation
/// references, a template, probes and resources), as the API server sends it.
fn typical() -> String {
    let text = include_str!("typical-pod.json");
    serde_json::from_str::<Value>(text).unwrap().to_string()
}

fn wide(containers: usize) -> String {
    let cs: Vec<Value> = (0..containers)
        .map(|i| {
            json!({
                "name": format!("c{i}"), "image": "registry.example/app:1.2.3",
                "env": [
                    {"name": "PLAIN", "value": "x"},
                    {"name": "DB_PASSWORD", "value": format!("vault:secret/data/app/c{i}#password")},
                    {"name": "SHARED", "value": "vault:secret/data/app/shared#token"},
                    {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}
                ],
                "resources": {"limits": {"cpu": "1", "memory": "256Mi"}},
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]
            })
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "wide", "namespace": "bench", "annotations": {"sidekey.dev/inject": "true", "sidekey.dev/vault-role": "app"}},
        "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "fsGroup": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": cs, "volumes": [{"name": "tmp", "emptyDir": {}}]}
    })
    .to_string()
}

/// A pod of about 300 KB: one container with 5,000 env vars, one in five a
/// reference (up to 1,000, the most a pod may have moved: `MAX_MOVED`), the rest
/// plain values that expand others as `$(VAR)` would (none expands a
/// reference, so the pod is accepted and every check runs).
fn many_env(n: usize) -> String {
    let env: Vec<Value> = (0..n)
        .map(|i| {
            if i % 5 == 0 && i / 5 < sidekey::mutate::MAX_MOVED {
                json!({"name": format!("SECRET_{i}"), "value": format!("vault:secret/data/app/s{}#key_{i}", i % 50)})
            } else {
                json!({"name": format!("PLAIN_{i}"), "value": format!("prefix-$(PLAIN_{})-suffix-padding-padding", i - 1)})
            }
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "many", "namespace": "bench", "annotations": {"sidekey.dev/inject": "true"}},
        "spec": {"securityContext": {"runAsUser": 1000, "fsGroup": 1000},
                 "containers": [{"name": "app", "image": "x", "args": ["--flag=$(PLAIN_1)"], "env": env}]}
    })
    .to_string()
}

/// What the webhook does per review: parse the pod, mutate it recording the
/// patch, serialize the patch.
fn parse_mutate_patch(raw: &str, config: &InjectorConfig) -> String {
    let mut pod: Value = serde_json::from_str(raw).unwrap();
    let (_, patch) = mutate_template_at(&mut pod, "", None, config).unwrap();
    serde_json::to_string(&patch).unwrap()
}

/// A pod written for the Vault Agent injector (corpus workload 09: three
/// secrets with Go templates), as the webhook reviews it in compatibility
/// mode: the annotations translated (each template parsed and its paths
/// found), then the same mutation.
fn vault_k8s_pod() -> String {
    let text = include_str!("../tests/data/vault-k8s/09-jweissig-realworld-templates.yaml");
    let doc = sidekey::yaml::parse_documents(text).unwrap().remove(0);
    let mut pod = doc["spec"]["template"].clone();
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod.to_string()
}

fn translate_mutate_patch(raw: &str, config: &InjectorConfig) -> String {
    let mut pod: Value = serde_json::from_str(raw).unwrap();
    let annotations = pod.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut).unwrap();
    let t = sidekey::vault_k8s::translate(annotations).unwrap();
    for (k, v) in t.annotations {
        annotations.insert(k, Value::String(v));
    }
    let (_, patch) = mutate_template_at(&mut pod, "", None, config).unwrap();
    serde_json::to_string(&patch).unwrap()
}

fn bench(c: &mut Criterion) {
    let config = InjectorConfig::default();
    let typical = typical();
    let wide = wide(20);
    assert!(parse_mutate_patch(&typical, &config).len() > 100);
    c.bench_function("parse+mutate+patch/typical pod", |b| b.iter(|| parse_mutate_patch(black_box(&typical), &config)));
    c.bench_function("parse+mutate+patch/20 containers", |b| b.iter(|| parse_mutate_patch(black_box(&wide), &config)));
    let vault_k8s = vault_k8s_pod();
    assert!(translate_mutate_patch(&vault_k8s, &config).contains("go-template"));
    c.bench_function("parse+translate+mutate+patch/vault-k8s pod, 3 templates", |b| {
        b.iter(|| translate_mutate_patch(black_box(&vault_k8s), &config))
    });
    for n in [2_500, 5_000, 10_000] {
        let pod = many_env(n);
        assert!(parse_mutate_patch(&pod, &config).len() > 100);
        eprintln!("{n} env vars: {} KB", pod.len() / 1024);
        c.bench_function(&format!("parse+mutate+patch/{n} env vars"), |b| {
            b.iter(|| parse_mutate_patch(black_box(&pod), &config))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
