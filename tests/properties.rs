//! Property tests of the mutation's invariants over generated pod specs.

#![allow(clippy::unwrap_used, missing_docs)]

use proptest::prelude::*;
use serde_json::{Value, json};
use sidekey::config::InjectorConfig;
use sidekey::mutate::{Outcome, mutate_template, mutate_template_at};
use sidekey::reference::is_env_reference;
use sidekey::{patch, pss};

const REFS: [&str; 6] = [
    "vault:secret/data/app/db#password",
    "vault:secret/data/app/db#username",
    "vault:database/creds/app#password",
    "aws-sm:prod/api#key",
    "arn:aws:secretsmanager:eu-west-1:123456789012:secret:prod/x-AbCdEf",
    "vault:secret/data/other#token",
];

fn env_entry() -> impl Strategy<Value = Value> {
    prop_oneof![
        ("[A-Z]{1,6}", "[a-z0-9:/ .-]{0,12}").prop_map(|(n, v)| json!({"name": n, "value": v})),
        ("[A-Z]{1,6}", 0..REFS.len()).prop_map(|(n, i)| json!({"name": n, "value": REFS[i]})),
        ("[A-Z]{1,6}", prop::bool::ANY, "[a-z]{1,5}").prop_map(|(n, mapped, key)| {
            let secret = if mapped { "app-db" } else { "other-secret" };
            json!({"name": n, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
        }),
        "[A-Z]{1,6}".prop_map(|n| json!({"name": n, "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})),
        "[A-Z]{1,6}".prop_map(|n| json!({"name": n, "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}})),
    ]
}

fn security_context() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}})),
        (1000i64..1003).prop_map(|u| json!({"runAsUser": u, "runAsNonRoot": true, "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}})),
        Just(json!({"runAsUser": 0, "privileged": true})),
    ]
}

fn container(name: String) -> impl Strategy<Value = Value> {
    (prop::collection::vec(env_entry(), 0..6), security_context(), prop::bool::ANY, prop::bool::ANY).prop_map(
        move |(env, sc, has_command, env_from)| {
            let mut c = json!({"name": name, "image": "registry.example/app:1"});
            // Distinct variable names per container, as the API server requires.
            let mut seen = std::collections::HashSet::new();
            let env: Vec<Value> =
                env.into_iter().filter(|e| seen.insert(e["name"].as_str().unwrap().to_owned())).collect();
            if !env.is_empty() {
                c["env"] = Value::Array(env);
            }
            if !sc.is_null() {
                c["securityContext"] = sc;
            }
            if has_command {
                c["command"] = json!(["/app", "serve"]);
            }
            if env_from {
                c["envFrom"] = json!([{"configMapRef": {"name": "cm"}}, {"secretRef": {"name": "app-db"}}]);
            }
            c
        },
    )
}

fn pod() -> impl Strategy<Value = Value> {
    let containers = (1usize..4).prop_flat_map(|n| (0..n).map(|i| container(format!("app-{i}"))).collect::<Vec<_>>());
    let inits = (0usize..3).prop_flat_map(|n| {
        (0..n)
            .map(|i| {
                (container(format!("init-{i}")), prop::bool::ANY).prop_map(|(mut c, native)| {
                    if native {
                        c["restartPolicy"] = json!("Always");
                    }
                    c
                })
            })
            .collect::<Vec<_>>()
    });
    let pod_sc = prop_oneof![
        Just(Value::Null),
        Just(json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}})),
        (1000i64..1002, prop::bool::ANY).prop_map(|(u, fs)| {
            let mut sc = json!({"runAsNonRoot": true, "runAsUser": u, "seccompProfile": {"type": "RuntimeDefault"}});
            if fs {
                sc["fsGroup"] = json!(u);
            }
            sc
        }),
        Just(json!({"runAsUser": 0, "seccompProfile": {"type": "Unconfined"}})),
    ];
    let env_mode = prop_oneof![Just(None), Just(Some("file")), Just(Some("exec")), Just(Some("remove"))];
    let lifecycle = prop_oneof![Just(None), Just(Some("sidecar")), Just(Some("init-only")), Just(Some("legacy"))];
    (containers, inits, pod_sc, env_mode, lifecycle, prop::bool::ANY, prop::bool::ANY).prop_map(
        |(containers, inits, sc, env_mode, lifecycle, select_all, annotation_secret)| {
            let mut ann = json!({"sidekey.dev/inject": "true", "sidekey.dev/map-app-db": "vault:secret/data/app/db", "team": "a"});
            if let Some(m) = env_mode {
                ann["sidekey.dev/env"] = json!(m);
            }
            if let Some(l) = lifecycle {
                ann["sidekey.dev/lifecycle"] = json!(l);
            }
            if annotation_secret {
                ann["sidekey.dev/secret-api-key"] = json!("vault:secret/data/app/api#key");
            }
            let mut names: Vec<String> = containers.iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect();
            if select_all {
                names.extend(inits.iter().map(|c| c["name"].as_str().unwrap().to_owned()));
                ann["sidekey.dev/containers"] = json!(names.join(","));
            }
            let mut spec = json!({"containers": containers, "volumes": [{"name": "tmp", "emptyDir": {}}]});
            if !inits.is_empty() {
                spec["initContainers"] = Value::Array(inits);
            }
            if !sc.is_null() {
                spec["securityContext"] = sc;
            }
            json!({"metadata": {"labels": {"app": "x"}, "annotations": ann}, "spec": spec})
        },
    )
}

fn all_containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers"].iter().flat_map(|k| spec[k].as_array().into_iter().flatten()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn mutation_invariants_hold(input in pod()) {
        let config = InjectorConfig::default();
        let mut out = input.clone();
        let result = mutate_template_at(&mut out, "", None, &config);
        let Ok((outcome, recorded)) = result else {
            // Refusals are fine (e.g. a reference in a container that is not
            // selected), but nothing may be half-applied.
            prop_assert_eq!(&out, &input);
            return Ok(());
        };
        let injected = matches!(outcome, Outcome::Injected { .. });
        prop_assert!(injected);
        let spec = &out["spec"];

        // Idempotent.
        let mut twice = out.clone();
        prop_assert_eq!(mutate_template(&mut twice, &config), Ok(Outcome::AlreadyInjected));
        prop_assert_eq!(&twice, &out);

        // The JSON Patch recorded by the mutation, applied to the input,
        // gives the output; so does a generic diff.
        let mut patched = input.clone();
        patch::apply(&mut patched, &recorded).unwrap();
        prop_assert_eq!(&patched, &out);
        let mut patched = input.clone();
        patch::apply(&mut patched, &patch::diff(&input, &out)).unwrap();
        prop_assert_eq!(&patched, &out);
        // Under a workload's template pointer too.
        let mut wrapped = json!({"spec": {"template": input.clone()}});
        let mut t = input.clone();
        let (_, nested) = mutate_template_at(&mut t, "/spec/template", None, &config).unwrap();
        patch::apply(&mut wrapped, &nested).unwrap();
        prop_assert_eq!(&wrapped["spec"]["template"], &out);

        for c in all_containers(spec) {
            let name = c["name"].as_str().unwrap();
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                if name.starts_with("sidekey-") {
                    continue;
                }
                // App mounts of our volumes are always read-only, never the token.
                prop_assert!(m["name"] != "sidekey-token");
                if m["name"] == "sidekey-secrets" || m["name"] == "sidekey-bin" {
                    prop_assert_eq!(&m["readOnly"], &json!(true));
                }
            }
            // No reference-valued env var and no mapped secretKeyRef survives.
            for e in c["env"].as_array().into_iter().flatten() {
                prop_assert!(!e["value"].as_str().is_some_and(is_env_reference));
                prop_assert!(e.pointer("/valueFrom/secretKeyRef/name") != Some(&json!("app-db")));
            }
            for e in c["envFrom"].as_array().into_iter().flatten() {
                prop_assert!(e.pointer("/secretRef/name") != Some(&json!("app-db")));
            }
            // Everything sidekey adds is restricted on its own terms.
            if name.starts_with("sidekey-") {
                let v = pss::check_container(c, spec.get("securityContext"));
                prop_assert!(v.is_empty(), "{:?}", v);
            }
        }

        // Untouched env entries keep their order.
        for (key, list) in [("initContainers", &input["spec"]["initContainers"]), ("containers", &input["spec"]["containers"])] {
            for orig in list.as_array().into_iter().flatten() {
                let now = spec[key].as_array().unwrap().iter().find(|c| c["name"] == orig["name"]).unwrap();
                let keep = |e: &&Value| {
                    !e["value"].as_str().is_some_and(is_env_reference)
                        && e.pointer("/valueFrom/secretKeyRef/name") != Some(&json!("app-db"))
                };
                let before: Vec<&Value> = orig["env"].as_array().into_iter().flatten().filter(keep).collect();
                let after: Vec<&Value> = now["env"].as_array().into_iter().flatten()
                    .filter(|e| !e["name"].as_str().unwrap().ends_with("_FILE") || before.contains(e))
                    .collect();
                prop_assert_eq!(before, after);
            }
        }

        // A pod that satisfied restricted still does.
        if pss::check_pod_spec(&input["spec"]).is_empty() {
            let v = pss::check_pod_spec(spec);
            prop_assert!(v.is_empty(), "{:?}", v);
        }

        // Labels and annotations kept.
        prop_assert_eq!(&out["metadata"]["labels"], &input["metadata"]["labels"]);
        for (k, v) in input["metadata"]["annotations"].as_object().unwrap() {
            prop_assert_eq!(&out["metadata"]["annotations"][k], v);
        }
    }
}

/// The generator must mostly produce pods that inject, or the invariants
/// above would be checked on refusals only.
#[test]
fn generator_mostly_produces_injectable_pods() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = pod();
    let config = InjectorConfig::default();
    let (mut injected, mut refused) = (0, 0);
    for _ in 0..500 {
        let mut p = strategy.new_tree(&mut runner).unwrap().current();
        match mutate_template(&mut p, &config) {
            Ok(Outcome::Injected { .. }) => injected += 1,
            _ => refused += 1,
        }
    }
    eprintln!("injected {injected} refused {refused}");
    assert!(injected >= 250, "only {injected} of 500 generated pods injected ({refused} refused)");
}
