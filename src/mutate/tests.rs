//! The mutation's unit tests.

use serde_json::json;

use super::plan::expansions;
use super::*;
use crate::agent_config::AgentConfig;

fn pod(annotations: Value, spec: Value) -> Value {
    json!({"metadata": {"annotations": annotations}, "spec": spec})
}

fn run(mut p: Value) -> (Value, Vec<String>) {
    match mutate_template(&mut p, &InjectorConfig::default()) {
        Ok(Outcome::Injected { warnings }) => (p, warnings.iter().map(Warning::detail).collect()),
        other => panic!("{other:?}"),
    }
}

fn err(mut p: Value) -> Vec<String> {
    let before = p.clone();
    let e = mutate_template(&mut p, &InjectorConfig::default()).unwrap_err();
    assert_eq!(p, before, "nothing is half-applied");
    e.problems.iter().map(ToString::to_string).collect()
}

#[test]
fn env_file_names_differ_per_reference_and_are_labels() {
    let a = env_file_name("DB_PASSWORD", &"vault:secret/data/a#password".parse().unwrap());
    let b = env_file_name("DB_PASSWORD", &"vault:secret/data/b#password".parse().unwrap());
    assert_ne!(a, b);
    assert!(a.starts_with("db-password-") && a.len() == "db-password-".len() + 8, "{a}");
    assert_eq!(crate::names::dns_label_problem(&a), None);
    let long = env_file_name(&"X_".repeat(60), &"vault:a/b".parse().unwrap());
    assert_eq!(crate::names::dns_label_problem(&long), None, "{long}");
    assert_eq!(crate::names::dns_label_problem(&env_file_name("__", &"vault:a/b".parse().unwrap())), None);
}

#[test]
fn default_shape_is_a_native_sidecar_first_in_init_containers() {
    let (p, _) = run(pod(
        json!({"sidekey.dev/inject": "true"}),
        json!({"containers": [{"name": "app", "image": "x", "env": [{"name": "A", "value": "vault:secret/data/a#k"}]}]}),
    ));
    let agent = &p["spec"]["initContainers"][0];
    assert_eq!(agent["name"], AGENT_CONTAINER);
    assert_eq!(agent["restartPolicy"], "Always");
    assert_eq!(agent["startupProbe"]["exec"]["command"][1], "ready");
    let app = &p["spec"]["containers"][0];
    assert_eq!(app["env"][0]["name"], "A_FILE");
    assert!(app["env"][0]["value"].as_str().unwrap().starts_with("/run/secrets/sidekey/a-"));
    assert_eq!(app["volumeMounts"][0]["readOnly"], true);
    assert_eq!(p["metadata"]["annotations"]["sidekey.dev/status"], "injected");
    let cfg = AgentConfig::from_json(agent["env"][0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(cfg.files.len(), 1);
    assert_eq!(cfg.files[0].mode, 0o444, "no fsGroup, unknown UID");
}

#[test]
fn same_reference_shares_a_file_and_different_ones_never_do() {
    let (p, _) = run(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/secret-pw": "vault:secret/data/a#pw"}),
        json!({"containers": [
            {"name": "a", "image": "x", "env": [{"name": "PW", "value": "vault:secret/data/a#pw"}, {"name": "X", "value": "vault:secret/data/x#k"}]},
            {"name": "b", "image": "x", "env": [{"name": "X", "value": "vault:secret/data/y#k"}, {"name": "Q", "value": "vault:secret/data/a#pw"}]}
        ]}),
    ));
    let c = &p["spec"]["containers"];
    assert_eq!(c[0]["env"][0]["value"], "/run/secrets/sidekey/pw");
    assert_eq!(c[1]["env"][1]["value"], "/run/secrets/sidekey/pw");
    assert_ne!(c[0]["env"][1]["value"], c[1]["env"][0]["value"]);
}

#[test]
fn fs_group_gives_0440_and_known_uid_runs_agent_as_app() {
    let (p, w) = run(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/secret-k": "vault:secret/data/a#k", "sidekey.dev/file-mode-k": "0400"}),
        json!({"securityContext": {"runAsUser": 1000, "fsGroup": 2000}, "containers": [{"name": "app", "image": "x"}]}),
    ));
    assert!(w.is_empty(), "{w:?}");
    let agent = &p["spec"]["initContainers"][0];
    assert_eq!(agent["securityContext"]["runAsUser"], 1000);
    assert_eq!(agent["securityContext"]["runAsGroup"], 2000);
}

#[test]
fn signal_mode_runs_the_agent_as_the_app_so_signals_reach_it() {
    let (p, _) = run(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/secret-k": "vault:secret/data/a#k", "sidekey.dev/on-change": "signal:SIGHUP"}),
        json!({"shareProcessNamespace": true, "securityContext": {"runAsUser": 1000, "fsGroup": 1000}, "containers": [{"name": "app", "image": "x"}]}),
    ));
    assert_eq!(p["spec"]["initContainers"][0]["securityContext"]["runAsUser"], 1000);
}

#[test]
fn explicit_mode_the_app_cannot_read_is_refused() {
    let e = err(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/secret-k": "vault:secret/data/a#k", "sidekey.dev/file-mode-k": "0400"}),
        json!({"securityContext": {"runAsUser": 1000}, "containers": [{"name": "app", "image": "x", "securityContext": {"runAsUser": 2000}}, {"name": "b", "image": "x"}]}),
    ));
    assert!(e[0].starts_with("annotation sidekey.dev/file-mode-k:"), "{e:?}");
}

#[test]
fn signal_without_shared_process_namespace_is_denied() {
    let e = err(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/on-change": "signal:SIGHUP"}),
        json!({"containers": [{"name": "app", "image": "x"}]}),
    ));
    assert!(e[0].contains("sidekey.dev/on-change") && e[0].contains("shareProcessNamespace"), "{e:?}");
}

#[test]
fn dollar_expansion_of_a_migrated_var_is_an_error() {
    let e = err(pod(
        json!({"sidekey.dev/inject": "true"}),
        json!({"containers": [{"name": "app", "image": "x", "args": ["--pw=$(PW)"], "env": [{"name": "PW", "value": "vault:a/b#c"}]}]}),
    ));
    assert!(e[0].contains("env PW") && e[0].contains("$(PW)"), "{e:?}");
    // The $$(PW) escape is not an expansion.
    run(pod(
        json!({"sidekey.dev/inject": "true"}),
        json!({"containers": [{"name": "app", "image": "x", "args": ["$$(PW)"], "env": [{"name": "PW", "value": "vault:a/b#c"}]}]}),
    ));
}

#[test]
fn exec_mode_wraps_the_command_and_keeps_args() {
    let (p, _) = run(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/env": "exec"}),
        json!({"containers": [{"name": "app", "image": "x", "command": ["/app"], "args": ["serve"], "env": [{"name": "PW", "value": "vault:a/b#c"}, {"name": "K", "value": "v"}]}]}),
    ));
    let app = &p["spec"]["containers"][0];
    let cmd: Vec<&str> = app["command"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(cmd[..2], ["/sidekey/bin/sidekey-agent", "exec"]);
    assert!(cmd[2].starts_with("--env=PW=/run/secrets/sidekey/pw-"));
    assert_eq!(cmd[3..], ["--", "/app"]);
    assert_eq!(app["args"], json!(["serve"]));
    assert_eq!(app["env"], json!([{"name": "K", "value": "v"}]));
    assert_eq!(p["spec"]["initContainers"][1]["name"], INSTALL_CONTAINER);
    assert!(app["volumeMounts"].as_array().unwrap().iter().any(|m| m["name"] == BIN_VOLUME && m["readOnly"] == true));
}

#[test]
fn exec_mode_with_on_change_supervises_the_command() {
    let (p, _) = run(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/env": "exec", "sidekey.dev/on-change": "http://127.0.0.1:9/x"}),
        json!({"containers": [{"name": "app", "image": "x", "command": ["/app"], "env": [{"name": "PW", "value": "vault:a/b#c"}]}]}),
    ));
    let cmd = &p["spec"]["containers"][0]["command"];
    assert_eq!(cmd[2], "--restart-on-change=/run/secrets/sidekey");
}

#[test]
fn exec_mode_without_command_needs_the_annotation() {
    let spec = json!({"containers": [{"name": "app", "image": "x", "env": [{"name": "PW", "value": "vault:a/b#c"}]}]});
    let e = err(pod(json!({"sidekey.dev/inject": "true", "sidekey.dev/env": "exec"}), spec.clone()));
    assert!(e[0].contains("sidekey.dev/command-app"), "{e:?}");
    let (p, _) = run(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/env": "exec", "sidekey.dev/command-app": "/entrypoint.sh run"}),
        spec,
    ));
    let cmd = p["spec"]["containers"][0]["command"].as_array().unwrap();
    assert_eq!(cmd[cmd.len() - 2..], [json!("/entrypoint.sh"), json!("run")]);
}

#[test]
fn unselected_container_with_a_reference_is_an_error() {
    let e = err(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/containers": "a"}),
        json!({"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "x", "env": [{"name": "T", "value": "aws-sm:t"}]}]}),
    ));
    assert!(e[0].starts_with("container b:"), "{e:?}");
}

#[test]
fn naming_a_missing_container_is_an_error() {
    let e = err(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/containers": "app,nope"}),
        json!({"containers": [{"name": "app", "image": "x"}]}),
    ));
    assert!(e[0].contains("sidekey.dev/containers") && e[0].contains("nope"), "{e:?}");
}

#[test]
fn reserved_names_and_taken_mount_paths_are_errors() {
    let e = err(pod(
        json!({"sidekey.dev/inject": "true"}),
        json!({"volumes": [{"name": "sidekey-secrets", "emptyDir": {}}], "containers": [{"name": "app", "image": "x", "volumeMounts": [{"name": "v", "mountPath": "/run/secrets/sidekey"}]}]}),
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e[0].contains("spec.volumes sidekey-secrets"));
    assert!(e[1].contains("sidekey.dev/mount-path"));
}

#[test]
fn the_webhook_default_lets_no_annotation_choose_the_vault_address() {
    let p = || {
        pod(
            json!({"sidekey.dev/inject": "true", "sidekey.dev/vault-addr": "https://other.example:8200", "sidekey.dev/secret-k": "vault:a/b#c"}),
            json!({"containers": [{"name": "app", "image": "x"}]}),
        )
    };
    assert!(mutate_template(&mut p(), &InjectorConfig::default()).is_err());
    assert!(mutate_template(&mut p(), &InjectorConfig::for_files()).is_ok());
}

#[test]
fn vault_addr_outside_the_allowlist_is_denied() {
    let mut config = InjectorConfig::default();
    config.vault.allowed_addrs = Some(vec!["https://vault.corp:8200".into()]);
    let mut p = pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/vault-addr": "https://evil.example:8200", "sidekey.dev/secret-k": "vault:a/b#c"}),
        json!({"containers": [{"name": "app", "image": "x"}]}),
    );
    let e = mutate_template(&mut p, &config).unwrap_err();
    assert!(e.to_string().contains("sidekey.dev/vault-addr"), "{e}");
}

#[test]
fn expansions_are_read_as_the_kubelet_reads_them() {
    let found = |s: &'static str| expansions(s).collect::<Vec<_>>();
    assert_eq!(found("--pw=$(PW) $(A)x$(B"), ["PW", "A"]);
    assert_eq!(found("$$(PW)"), Vec::<&str>::new(), "escaped");
    assert_eq!(found("$$$(PW)"), ["PW"], "an escaped $ then an expansion");
    assert_eq!(found("$"), Vec::<&str>::new());
}

#[test]
fn a_mapped_secret_key_cannot_change_what_is_read() {
    for key in ["password?version-stage=AWSPREVIOUS", "pw\u{1}", "a#b", "a b", "..", ""] {
        let e = err(pod(
            json!({"sidekey.dev/inject": "true", "sidekey.dev/map-db": "aws-sm:prod/db"}),
            json!({"containers": [{"name": "app", "image": "x",
                "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": key}}}]}]}),
        ));
        assert!(e.iter().any(|p| p.contains("PW") && p.contains("must be a Kubernetes Secret key")), "{key:?}: {e:?}");
    }
    let (p, _) = run(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/map-db": "aws-sm:prod/db"}),
        json!({"containers": [{"name": "app", "image": "x",
            "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "db.password-2_x"}}}]}]}),
    ));
    assert!(p.to_string().contains("PW_FILE"));
}

#[test]
fn a_native_sidecar_revokes_its_credentials_when_the_pod_stops_unless_told_not_to() {
    let revoke = |extra: Value| {
        let mut ann = json!({"sidekey.dev/inject": "true", "sidekey.dev/secret-k": "vault:database/creds/app"});
        ann.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (p, _) = run(pod(ann, json!({"containers": [{"name": "app", "image": "x"}]})));
        let agent = p["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .chain(p["spec"]["containers"].as_array().unwrap())
            .find(|c| c["name"] == INIT_CONTAINER || c["name"] == AGENT_CONTAINER)
            .unwrap()
            .clone();
        let cfg: Value = serde_json::from_str(agent["env"][0]["value"].as_str().unwrap()).unwrap();
        cfg["vault"]["revokeOnShutdown"] == true
    };
    assert!(revoke(json!({})));
    assert!(!revoke(json!({"sidekey.dev/revoke-on-shutdown": "false"})));
    assert!(!revoke(json!({"sidekey.dev/lifecycle": "legacy", "sidekey.dev/revoke-on-shutdown": "true"})));
    assert!(!revoke(json!({"sidekey.dev/lifecycle": "init-only"})));
    let e = err(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/revoke-on-shutdown": "yes", "sidekey.dev/secret-k": "vault:a/b#c"}),
        json!({"containers": [{"name": "app", "image": "x"}]}),
    ));
    assert!(e.iter().any(|p| p.contains("sidekey.dev/revoke-on-shutdown")), "{e:?}");
}

#[test]
fn moves_at_most_max_moved_secrets_per_pod() {
    let with = |n: usize| {
        let env: Vec<Value> =
            (0..n).map(|i| json!({"name": format!("S{i}"), "value": format!("vault:secret/data/app#k{i}")})).collect();
        pod(json!({"sidekey.dev/inject": "true"}), json!({"containers": [{"name": "app", "image": "x", "env": env}]}))
    };
    let (p, _) = run(with(MAX_MOVED));
    let env = p["spec"]["containers"][0]["env"].as_array().cloned().unwrap_or_default();
    assert!(env.iter().all(|e| !e["value"].as_str().is_some_and(is_env_reference)), "a reference is left");
    let e = err(with(MAX_MOVED + 500));
    assert_eq!(
        e,
        vec![format!(
            "pod: {} env vars and envFrom entries are secrets to move to files; sidekey moves at most {MAX_MOVED} per pod",
            MAX_MOVED + 500
        )]
    );
}

#[test]
fn denies_app_containers_that_mount_sidekeys_volumes() {
    for volume in [TOKEN_VOLUME, SECRETS_VOLUME, STATE_VOLUME, BIN_VOLUME] {
        let e = err(pod(
            json!({"sidekey.dev/inject": "true", "sidekey.dev/secret-k": "vault:a/b#c"}),
            json!({"containers": [{"name": "app", "image": "x",
                "volumeMounts": [{"name": volume, "mountPath": "/steal", "readOnly": false}]}]}),
        ));
        assert!(e.iter().any(|p| p.contains(&format!("container app volumeMounts {volume}"))), "{e:?}");
    }
    let e = err(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/secret-k": "vault:a/b#c"}),
        json!({"containers": [{"name": "app", "image": "x"}],
            "ephemeralContainers": [{"name": "dbg", "image": "x", "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": "/t"}]}]}),
    ));
    assert!(e.iter().any(|p| p.contains("container dbg volumeMounts sidekey-token")), "{e:?}");
}

#[test]
fn a_long_running_vault_agent_keeps_its_state_in_a_volume_only_it_mounts() {
    let config = InjectorConfig::default();
    let shape = |lifecycle: &str, reference: &str| {
        let mut p = pod(
            json!({"sidekey.dev/inject": "true", "sidekey.dev/lifecycle": lifecycle, "sidekey.dev/secret-k": reference}),
            json!({"containers": [{"name": "app", "image": "x"}]}),
        );
        mutate_template(&mut p, &config).unwrap();
        p
    };
    let mounts_state =
        |c: &Value| c["volumeMounts"].as_array().into_iter().flatten().any(|m| m["name"] == STATE_VOLUME);
    for lifecycle in ["sidecar", "legacy"] {
        let p = shape(lifecycle, "vault:database/creds/app");
        let volume = p["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == STATE_VOLUME).unwrap();
        assert_eq!(volume["emptyDir"]["medium"], "Memory");
        let all: Vec<&Value> =
            ["initContainers", "containers"].iter().flat_map(|k| p["spec"][k].as_array().unwrap().iter()).collect();
        for c in all {
            let is_agent = c["name"] == AGENT_CONTAINER || c["name"] == INIT_CONTAINER;
            assert_eq!(mounts_state(c), is_agent, "{lifecycle}: {}", c["name"]);
            if is_agent {
                let cfg = c["env"][0]["value"].as_str().unwrap();
                assert!(cfg.contains(&format!("\"stateDir\":\"{STATE_DIR}\"")), "{cfg}");
            }
        }
    }
    for (lifecycle, reference) in [("init-only", "vault:database/creds/app"), ("sidecar", "aws-sm:prod/db")] {
        let p = shape(lifecycle, reference);
        assert!(!p["spec"]["volumes"].as_array().unwrap().iter().any(|v| v["name"] == STATE_VOLUME), "{lifecycle}");
    }
}

#[test]
fn plain_http_vault_addr_annotation_is_denied_and_the_ca_reaches_the_agent() {
    let mut config = InjectorConfig::for_files();
    config.vault.ca_cert = Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into());
    let annotations = |addr: &str| json!({"sidekey.dev/inject": "true", "sidekey.dev/vault-addr": addr, "sidekey.dev/secret-k": "vault:a/b#c"});
    let spec = json!({"containers": [{"name": "app", "image": "x"}]});
    let e = mutate_template(&mut pod(annotations("http://vault.example:8200"), spec.clone()), &config).unwrap_err();
    assert!(e.to_string().contains("sidekey.dev/vault-addr: plain http:// is refused"), "{e}");
    let mut p = pod(annotations("https://vault.example:8200"), spec);
    mutate_template(&mut p, &config).unwrap();
    let agent = p["spec"]["initContainers"].as_array().unwrap().iter().find(|c| c["name"] == "sidekey-agent").unwrap();
    let cfg = agent["env"].as_array().unwrap().iter().find(|e| e["name"] == "SIDEKEY_CONFIG").unwrap();
    let cfg: Value = serde_json::from_str(cfg["value"].as_str().unwrap()).unwrap();
    assert_eq!(cfg["vault"]["caPem"], json!(config.vault.ca_cert));
}

#[test]
fn namespace_policy_refuses_references_outside_the_allowed_prefixes() {
    let config = InjectorConfig::from_yaml(
        "policy:\n  rules:\n    - namespaces: [team-a]\n      references: [\"vault:secret/data/team-a/*\"]\n",
    )
    .unwrap();
    let p = pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/secret-ok": "vault:secret/data/team-a/db#pw", "sidekey.dev/secret-bad": "vault:secret/data/team-b/db#pw"}),
        json!({"containers": [{"name": "app", "image": "x", "env": [{"name": "X", "value": "vault:secret/data/payments/x#k"}]}]}),
    );
    let e = mutate_template_at(&mut p.clone(), "", Some("team-a"), &config).unwrap_err().to_string();
    assert!(
        e.contains("annotation sidekey.dev/secret-bad: reference vault:secret/data/team-b/db#pw is not allowed"),
        "{e}"
    );
    assert!(e.contains("container app: env X"), "{e}");
    assert!(!e.contains("secret-ok"), "{e}");
    // Other namespaces follow the default (allow).
    assert!(mutate_template_at(&mut p.clone(), "", Some("team-b"), &config).is_ok());
}

/// A pod whose file `conf` is the Go template `template`, its secret
/// reference the allowed `vault:secret/data/payments/app`.
fn templated(template: &str) -> Value {
    pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/secret-conf": "vault:secret/data/payments/app",
            "sidekey.dev/format-conf": "go-template", "sidekey.dev/template-conf": template}),
        json!({"containers": [{"name": "app", "image": "x"}]}),
    )
}

fn payments_policy(extra: &str) -> InjectorConfig {
    InjectorConfig::from_yaml(&format!(
        "policy:\n  rules:\n    - namespaces: [payments]\n      references: [\"vault:secret/data/payments/*\"{extra}]\n"
    ))
    .unwrap()
}

#[test]
fn every_template_call_is_checked_against_the_namespace_policy() {
    let config = payments_policy("");
    let refused = [
        (
            r#"{{ with secret "secret/data/team-b/db" }}{{ .Data.data.pw }}{{ end }}"#,
            "reference vault:secret/data/team-b/db is not allowed in namespace \"payments\"",
        ),
        (
            r#"{{ with secret "pki/issue/admin" "common_name=a" }}{{ .Data.certificate }}{{ end }}"#,
            "a template may not write to pki/issue/admin",
        ),
        (
            r#"{{ with secret "sys/policies/acl/x" "policy=path \"*\" {}" }}{{ end }}"#,
            "a template may not write to sys/policies/acl/x",
        ),
        (
            r#"{{ with secret "auth/token/create" "policies=root" }}{{ .Auth.ClientToken }}{{ end }}"#,
            "a template may not write to auth/token/create",
        ),
        (
            r#"{{ with pkiCert "pki/issue/web" "common_name=a" "ttl=720h" }}{{ .Cert }}{{ end }}"#,
            "a template may not write to pki/issue/web",
        ),
        // Behind an allowed first call, in a nested block.
        (
            r#"{{ with secret "secret/data/payments/app" }}{{ if true }}{{ with secret "secret/data/hr/salaries" }}{{ end }}{{ end }}{{ end }}"#,
            "vault:secret/data/hr/salaries is not allowed",
        ),
    ];
    for (template, reason) in refused {
        let mut p = templated(template);
        let before = p.clone();
        let e = mutate_template_at(&mut p, "", Some("payments"), &config).unwrap_err().to_string();
        assert!(e.contains("annotation sidekey.dev/template-conf: ") && e.contains(reason), "{template}\n{e}");
        assert_eq!(p, before, "nothing is half-applied");
    }
    let ok = r#"{{ with secret "secret/data/payments/app" }}{{ .Data.data.pw }}{{ end }}"#;
    assert!(mutate_template_at(&mut templated(ok), "", Some("payments"), &config).is_ok());
}

#[test]
fn templates_never_reach_the_agents_token_unless_the_policy_names_the_path() {
    let lookup = r#"{{ with secret "auth/token/lookup-self" }}{{ .Data.id }}{{ end }}"#;
    // No policy at all (allow everything): still refused.
    let e = mutate_template_at(&mut templated(lookup), "", Some("any"), &InjectorConfig::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("a template may not read auth/token/lookup-self: paths under auth/ reach the agent's own token"),
        "{e}"
    );
    for path in ["sys/wrapping/lookup", "sys/mounts", "auth/kubernetes/role/x"] {
        let t = format!("{{{{ with secret \"{path}\" }}}}{{{{ .Data }}}}{{{{ end }}}}");
        assert!(mutate_template_at(&mut templated(&t), "", Some("any"), &InjectorConfig::default()).is_err(), "{path}");
    }
    // A pattern that allows everything does not allow these.
    let config = payments_policy(", \"*\"");
    assert!(mutate_template_at(&mut templated(lookup), "", Some("payments"), &config).is_err());
    // Named explicitly, it is allowed, and the agent is told so.
    let config = payments_policy(", \"vault:auth/token/lookup-self\"");
    let mut p = templated(lookup);
    mutate_template_at(&mut p, "", Some("payments"), &config).unwrap();
    let agent = &p["spec"]["initContainers"][0];
    let cfg = AgentConfig::from_json(agent["env"][0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(cfg.vault.unwrap().template_system_paths, ["auth/token/lookup-self"]);
}

#[test]
fn template_writes_are_allowed_only_where_the_policy_names_them() {
    let config = InjectorConfig::from_yaml(
        "policy:\n  rules:\n    - namespaces: [payments]\n      writes: [\"vault:pki/issue/payments-*\", \"vault:auth/token/create\"]\n",
    )
    .unwrap();
    let cert =
        r#"{{ with pkiCert "pki/issue/payments-web" "common_name=web.payments.svc" }}{{ .Cert }}{{ .Key }}{{ end }}"#;
    assert!(mutate_template_at(&mut templated(cert), "", Some("payments"), &config).is_ok());
    let other = cert.replace("payments-web", "admin");
    let e = mutate_template_at(&mut templated(&other), "", Some("payments"), &config).unwrap_err().to_string();
    assert!(e.contains("(writes allowed: vault:pki/issue/payments-*, vault:auth/token/create)"), "{e}");
    // Another namespace matches no rule: no writes.
    let e = mutate_template_at(&mut templated(cert), "", Some("web"), &config).unwrap_err().to_string();
    assert!(e.contains("names no paths templates may write there (policy.rules[].writes)"), "{e}");
    // A write pattern must be a vault: one.
    let bad = InjectorConfig::from_yaml("policy:\n  rules:\n    - namespaces: [a]\n      writes: [\"pki/*\"]\n");
    assert!(bad.unwrap_err().to_string().contains("policy.rules[0].writes: \"pki/*\" is not a vault: pattern"));
}

#[test]
fn template_calls_are_bounded_per_pod() {
    let mut annotations = json!({"sidekey.dev/inject": "true"});
    for f in 0..3 {
        let t: String =
            (0..80).map(|i| format!("{{{{ with secret \"secret/data/f{f}/p{i}\" }}}}{{{{ end }}}}")).collect();
        annotations[format!("sidekey.dev/secret-f{f}")] = json!("vault:secret/data/x");
        annotations[format!("sidekey.dev/format-f{f}")] = json!("go-template");
        annotations[format!("sidekey.dev/template-f{f}")] = json!(t);
    }
    let e = err(pod(annotations, json!({"containers": [{"name": "app", "image": "x"}]}))).join("\n");
    assert!(e.contains("the templates make 240 distinct secret calls; at most 200 per pod"), "{e}");
}

#[test]
fn disabled_backends_are_refused() {
    let e = err(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/secret-k": "file:/etc/x#k"}),
        json!({"containers": [{"name": "app", "image": "x"}]}),
    ));
    assert!(e[0].contains("file backend is disabled"), "{e:?}");
}

#[test]
fn agent_goes_after_leading_native_sidecars_and_before_ordinary_inits() {
    let (p, _) = run(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/secret-k": "vault:a/b#c"}),
        json!({
            "initContainers": [
                {"name": "mesh", "image": "x", "restartPolicy": "Always"},
                {"name": "migrate", "image": "x"},
                {"name": "late-sidecar", "image": "x", "restartPolicy": "Always"}
            ],
            "containers": [{"name": "app", "image": "x"}]
        }),
    ));
    let names: Vec<&str> =
        p["spec"]["initContainers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["mesh", AGENT_CONTAINER, "migrate", "late-sidecar"]);
}

#[test]
fn legacy_adds_an_init_and_a_regular_agent() {
    let (p, _) = run(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/lifecycle": "legacy", "sidekey.dev/secret-k": "vault:a/b#c"}),
        json!({"containers": [{"name": "app", "image": "x"}]}),
    ));
    assert_eq!(p["spec"]["initContainers"][0]["name"], INIT_CONTAINER);
    assert_eq!(p["spec"]["initContainers"][0]["args"], json!(["run", "--once"]));
    assert_eq!(p["spec"]["containers"][1]["name"], AGENT_CONTAINER);
    assert!(p["spec"]["containers"][1].get("restartPolicy").is_none());
}

#[test]
fn mapped_secret_refs_become_files_and_optional_is_kept() {
    let (p, w) = run(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/map-db": "vault:secret/data/db"}),
        json!({"containers": [{"name": "app", "image": "x",
            "env": [
                {"name": "U", "valueFrom": {"secretKeyRef": {"name": "db", "key": "user", "optional": true}}},
                {"name": "S", "valueFrom": {"secretKeyRef": {"name": "smtp", "key": "pw"}}}
            ],
            "envFrom": [{"secretRef": {"name": "db"}}, {"configMapRef": {"name": "cm"}}]}]}),
    ));
    let app = &p["spec"]["containers"][0];
    assert_eq!(app["env"][0]["name"], "U_FILE");
    assert_eq!(app["env"][1]["name"], "S");
    assert_eq!(app["envFrom"], json!([{"configMapRef": {"name": "cm"}}]));
    let cfg = AgentConfig::from_json(p["spec"]["initContainers"][0]["env"][0]["value"].as_str().unwrap()).unwrap();
    let user = cfg.files.iter().find(|f| f.reference.key() == Some("user")).unwrap();
    assert!(user.optional);
    assert_eq!(user.reference.to_string(), "vault:secret/data/db#user");
    assert!(cfg.files.iter().any(|f| f.dir && f.name == "db"));
    assert!(w.iter().any(|w| w.contains("smtp")), "{w:?}");
}

#[test]
fn not_opted_in_and_injected_are_untouched() {
    let mut p = pod(json!({"a": "b"}), json!({"containers": [{"name": "a", "image": "x"}]}));
    let before = p.clone();
    assert_eq!(mutate_template(&mut p, &InjectorConfig::default()), Ok(Outcome::NotOptedIn));
    assert_eq!(p, before);
    let mut p = pod(json!({"sidekey.dev/inject": "true", "sidekey.dev/status": "injected"}), json!({}));
    assert_eq!(mutate_template(&mut p, &InjectorConfig::default()), Ok(Outcome::AlreadyInjected));
}

#[test]
fn warns_about_secrets_in_pods_that_did_not_opt_in() {
    let w = env_secret_warnings(&pod(
        json!({}),
        json!({"containers": [{"name": "a", "image": "x", "env": [
            {"name": "T", "value": "vault:a/b#c"},
            {"name": "P", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
        ], "envFrom": [{"secretRef": {"name": "e"}}]}]}),
    ));
    assert_eq!(w.len(), 3);
    let w: Vec<String> = w.iter().map(Warning::detail).collect();
    assert!(w[0].contains("env T") && w[1].contains("Secret s") && w[2].contains("Secret e"));
}

fn vault_auth_of(p: &Value) -> crate::agent_config::VaultAuth {
    let json = p["spec"]["initContainers"][0]["env"][0]["value"].as_str().unwrap();
    AgentConfig::from_json(json).unwrap().vault.unwrap().auth
}

#[test]
fn the_login_method_and_role_come_from_the_cluster_defaults_or_the_pod() {
    use crate::agent_config::VaultAuth;
    use crate::config::AuthMethod;
    let spec = json!({"serviceAccountName": "billing",
        "containers": [{"name": "a", "image": "x", "env": [{"name": "K", "value": "vault:secret/data/k#v"}]}]});
    let with = |annotations: Value, config: &InjectorConfig| {
        let mut p = pod(annotations, spec.clone());
        p["metadata"]["namespace"] = json!("payments");
        mutate_template(&mut p, config).unwrap();
        vault_auth_of(&p)
    };
    let token_path = format!("{TOKEN_DIR}/token");
    // The built-in default: Kubernetes auth, the service account as role.
    let plain = InjectorConfig::default();
    assert_eq!(
        with(json!({"sidekey.dev/inject": "true"}), &plain),
        VaultAuth::Kubernetes { mount: "kubernetes".into(), role: "billing".into(), token_path: token_path.clone() }
    );
    // A pod picks JWT auth: its usual mount with it.
    assert_eq!(
        with(json!({"sidekey.dev/inject": "true", "sidekey.dev/vault-auth-method": "jwt"}), &plain),
        VaultAuth::Jwt { mount: "jwt".into(), role: "billing".into(), token_path: token_path.clone() }
    );
    // A cluster that logs in with JWT at its own mount, roles named by rule.
    let mut cluster = InjectorConfig::default();
    cluster.vault.auth_method = AuthMethod::Jwt;
    cluster.vault.auth_mount = "jwt-prod-eu1".into();
    cluster.vault.role = Some("k8s-{namespace}-{serviceAccount}".into());
    assert_eq!(
        with(json!({"sidekey.dev/inject": "true"}), &cluster),
        VaultAuth::Jwt {
            mount: "jwt-prod-eu1".into(),
            role: "k8s-payments-billing".into(),
            token_path: token_path.clone()
        }
    );
    // A pod's own role is taken as written.
    assert_eq!(
        with(json!({"sidekey.dev/inject": "true", "sidekey.dev/vault-role": "ops"}), &cluster),
        VaultAuth::Jwt { mount: "jwt-prod-eu1".into(), role: "ops".into(), token_path }
    );
    // Where the agent logs in may differ from where it reads.
    let mut p = pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/vault-namespace": "org/team",
               "sidekey.dev/vault-auth-namespace": "org"}),
        spec.clone(),
    );
    mutate_template(&mut p, &plain).unwrap();
    let json = p["spec"]["initContainers"][0]["env"][0]["value"].as_str().unwrap();
    let vault = AgentConfig::from_json(json).unwrap().vault.unwrap();
    assert_eq!((vault.namespace.as_deref(), vault.auth_namespace.as_deref()), (Some("org/team"), Some("org")));
    let e = err(pod(json!({"sidekey.dev/inject": "true", "sidekey.dev/vault-auth-method": "oidc"}), spec.clone()));
    assert_eq!(e, ["annotation sidekey.dev/vault-auth-method: must be kubernetes or jwt"]);
}

#[test]
fn a_cert_annotation_becomes_a_certificate_directory_the_agent_keeps_issued() {
    let spec = json!({"securityContext": {"fsGroup": 2000},
        "containers": [{"name": "web", "image": "x"}]});
    let (p, _) = run(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/cert-web": "pki/sign/web cn=web.shop.svc alt=web ttl=24h"}),
        spec.clone(),
    ));
    let json = p["spec"]["initContainers"][0]["env"][0]["value"].as_str().unwrap();
    let cfg = AgentConfig::from_json(json).unwrap();
    let f = &cfg.files[0];
    assert_eq!((f.name.as_str(), f.dir, f.mode), ("web", true, 0o440));
    assert_eq!(f.reference.to_string(), "vault:pki/sign/web");
    let cert = f.cert.as_ref().unwrap();
    assert_eq!((cert.common_name.as_str(), cert.alt_names.as_slice()), ("web.shop.svc", &["web".to_owned()][..]));
    assert!(cfg.vault.is_some(), "certificates come from Vault: the agent gets its login");
    let e = err(pod(
        json!({"sidekey.dev/inject": "true", "sidekey.dev/cert-web": "pki/sign/web cn=a.svc",
               "sidekey.dev/secret-web": "vault:secret/data/web#k"}),
        spec.clone(),
    ));
    assert_eq!(e, ["annotation sidekey.dev/cert-web: the name web is taken by sidekey.dev/secret-web"]);
    let e = err(pod(json!({"sidekey.dev/inject": "true", "sidekey.dev/cert-web": "pki/sign/web"}), spec));
    assert_eq!(e, ["annotation sidekey.dev/cert-web: cn=<common name> is required"]);
}

#[test]
fn a_namespace_policy_decides_which_login_settings_pods_may_choose() {
    use crate::config::PolicyRule;
    let mut config = InjectorConfig::default();
    config.policy.rules.push(PolicyRule {
        namespaces: vec!["payments".into()],
        overrides: Some(vec!["vault-role".into()]),
        ..PolicyRule::default()
    });
    assert!(config.validate().is_ok());
    let spec =
        json!({"containers": [{"name": "a", "image": "x", "env": [{"name": "K", "value": "vault:secret/data/k#v"}]}]});
    let attempt = |ns: &str, annotations: Value| {
        let mut p = pod(annotations, spec.clone());
        p["metadata"]["namespace"] = json!(ns);
        mutate_template(&mut p, &config).map(|_| ()).map_err(|e| e.to_string())
    };
    let role = json!({"sidekey.dev/inject": "true", "sidekey.dev/vault-role": "ops"});
    let mount = json!({"sidekey.dev/inject": "true", "sidekey.dev/vault-auth-mount": "kubernetes-other"});
    assert_eq!(attempt("payments", role), Ok(()));
    let e = attempt("payments", mount.clone()).unwrap_err();
    assert!(
        e.starts_with("annotation sidekey.dev/vault-auth-mount: pods in namespace \"payments\" may not choose"),
        "{e}"
    );
    assert_eq!(attempt("shop", mount), Ok(()), "no rule for the namespace: pods choose");
    config.policy.rules[0].overrides = Some(vec!["vault-token".into()]);
    assert!(
        config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("policy.rules[0].overrides: unknown setting \"vault-token\"")
    );
}

#[test]
fn with_a_metrics_port_the_agent_serves_metrics_on_loopback_unless_the_pod_ip_is_asked_for() {
    let mut config = InjectorConfig::default();
    config.agent.metrics_port = Some(9102);
    let original = pod(
        json!({"sidekey.dev/inject": "true"}),
        json!({"containers": [{"name": "a", "image": "x", "env": [{"name": "K", "value": "vault:secret/data/k#v"}]}]}),
    );
    let mut p = original.clone();
    mutate_template(&mut p, &config).unwrap();
    let agent = &p["spec"]["initContainers"][0];
    assert_eq!(agent.get("ports"), None, "nothing to declare: only the pod reaches it");
    let cfg = AgentConfig::from_json(agent["env"][0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(cfg.metrics_addr.as_deref(), Some("127.0.0.1:9102"));

    config.agent.metrics_listen = crate::config::MetricsListen::PodIp;
    let mut p = original;
    mutate_template(&mut p, &config).unwrap();
    let agent = &p["spec"]["initContainers"][0];
    assert_eq!(agent["ports"], json!([{"name": "sidekey-metrics", "containerPort": 9102, "protocol": "TCP"}]));
    let cfg = AgentConfig::from_json(agent["env"][0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(cfg.metrics_addr.as_deref(), Some("0.0.0.0:9102"));
    assert!(crate::pss::check_container(agent, None).is_empty(), "still restricted");
    config.agent.metrics_port = Some(0);
    assert!(config.validate().unwrap_err().to_string().contains("agent.metricsPort"));
}
