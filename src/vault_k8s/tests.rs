use serde_json::json;

use super::*;

fn map(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn translated(v: Value) -> Translation {
    translate(&map(v)).unwrap()
}

fn problems(v: Value) -> Vec<String> {
    translate(&map(v)).unwrap_err().iter().map(ToString::to_string).collect()
}

/// The translation is a valid sidekey pod: it goes through the one contract.
fn parsed(t: &Translation) -> crate::annotations::PodAnnotations {
    let m: Map<String, Value> = t.annotations.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    crate::annotations::parse(Some(&m)).unwrap()
}

#[test]
fn the_default_templates_are_vault_agents() {
    assert_eq!(
        default_map_template("secret/data/db"),
        "{{ with secret \"secret/data/db\" }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }}{{ end }}"
    );
    assert_eq!(default_json_template("a/b"), "{{ with secret \"a/b\" }}{{ .Data | toJSON }}\n{{ end }}");
}

#[test]
fn a_typical_pod_becomes_sidekey_annotations() {
    let t = translated(json!({
        "vault.hashicorp.com/agent-inject": "true",
        "vault.hashicorp.com/role": "web",
        "vault.hashicorp.com/auth-path": "auth/k8s-east",
        "vault.hashicorp.com/agent-inject-secret-Database-Config.txt": "database/creds/web",
        "vault.hashicorp.com/agent-inject-template-Database-Config.txt": "{{ with secret \"database/creds/web\" }}postgres://{{ .Data.username }}:{{ .Data.password }}@db{{ end }}",
        "vault.hashicorp.com/agent-inject-secret-kv": "secret/data/web",
        "vault.hashicorp.com/agent-inject-perms-kv": "0400",
        "vault.hashicorp.com/agent-inject-command-kv": "kill -HUP 1",
        "vault.hashicorp.com/agent-pre-populate-only": "false",
        "vault.hashicorp.com/agent-cache-enable": "true",
        "vault.hashicorp.com/agent-limits-cpu": "250m",
        "other.example/x": "kept out",
    }));
    let a = &t.annotations;
    assert_eq!(a["sidekey.dev/inject"], "true");
    assert_eq!(a["sidekey.dev/vault-role"], "web");
    assert_eq!(a["sidekey.dev/vault-auth-mount"], "k8s-east");
    assert_eq!(a["sidekey.dev/mount-path"], "/vault/secrets");
    // The file name is lower-cased, as vault-k8s does.
    assert_eq!(a["sidekey.dev/secret-database-config.txt"], "vault:database/creds/web");
    assert_eq!(a["sidekey.dev/format-database-config.txt"], "go-template");
    assert_eq!(a["sidekey.dev/template-kv"], default_map_template("secret/data/web"));
    assert_eq!(a["sidekey.dev/file-mode-kv"], "0400");
    assert_eq!(a["sidekey.dev/on-change"], "signal:SIGHUP");
    assert_eq!(a["sidekey.dev/agent-cpu-limit"], "250m");
    assert!(!a.contains_key("sidekey.dev/lifecycle"));
    assert!(t.notes.iter().any(|n| n.contains("agent-cache-enable")), "{:?}", t.notes);
    let p = parsed(&t);
    assert_eq!(p.secrets.len(), 2);
    assert_eq!(p.secrets["kv"].file_mode, Some(0o400));
}

#[test]
fn names_case_files_delims_and_defaults_follow_vault_k8s() {
    let t = translated(json!({
        "vault.hashicorp.com/agent-inject": "1",
        "vault.hashicorp.com/preserve-secret-case": "true",
        "vault.hashicorp.com/agent-inject-default-template": "json",
        "vault.hashicorp.com/agent-inject-secret-AppConfig": "secret/data/app",
        "vault.hashicorp.com/agent-inject-secret-x": "secret/data/x",
        "vault.hashicorp.com/agent-inject-file-x": "app.properties",
        "vault.hashicorp.com/agent-inject-secret-d": "secret/data/d",
        "vault.hashicorp.com/agent-inject-template-d": "[[ with secret \"secret/data/d\" ]][[ .Data.data.k ]][[ end ]]",
        "vault.hashicorp.com/agent-template-left-delim-d": "[[",
        "vault.hashicorp.com/agent-template-right-delim-d": "]]",
        "vault.hashicorp.com/secret-volume-path": "/etc/secrets/",
        "vault.hashicorp.com/agent-pre-populate-only": "TRUE",
    }));
    let a = &t.annotations;
    assert_eq!(a["sidekey.dev/template-AppConfig"], default_json_template("secret/data/app"));
    assert_eq!(a["sidekey.dev/secret-app.properties"], "vault:secret/data/x");
    assert_eq!(a["sidekey.dev/delims-d"], "[[ ]]");
    assert_eq!(a["sidekey.dev/mount-path"], "/etc/secrets");
    assert_eq!(a["sidekey.dev/lifecycle"], "init-only");
    parsed(&t);
    let t = translated(json!({
        "vault.hashicorp.com/agent-inject": "true",
        "vault.hashicorp.com/agent-inject-secret-x": "kv/x",
        "vault.hashicorp.com/error-on-missing-key-x": "true",
    }));
    assert_eq!(t.annotations["sidekey.dev/missing-key-x"], "error");
    assert!(parsed(&t).secrets["x"].missing_key_error);
    // A template-only secret is named after the first path it reads.
    let t = translated(json!({
        "vault.hashicorp.com/agent-inject": "true",
        "vault.hashicorp.com/agent-inject-template-cfg": "{{ with secret \"kv/app\" }}{{ .Data.a }}{{ end }}",
    }));
    assert_eq!(t.annotations["sidekey.dev/secret-cfg"], "vault:kv/app");
}

#[test]
fn pods_that_do_not_opt_in_or_were_injected_get_nothing_to_inject() {
    assert!(translated(json!({"vault.hashicorp.com/agent-inject": "false"})).annotations.is_empty());
    // Left for vault-k8s no more, next to sidekey's own: sidekey's decide.
    assert!(
        translated(json!({"vault.hashicorp.com/agent-inject": "false", "sidekey.dev/inject": "true"}))
            .annotations
            .is_empty()
    );
    let t = translated(
        json!({"vault.hashicorp.com/agent-inject": "true", "vault.hashicorp.com/agent-inject-status": "injected"}),
    );
    assert_eq!(t.annotations.get("sidekey.dev/inject"), None);
    assert_eq!(t.annotations["sidekey.dev/status"], "injected");
    assert!(!uses_vault_k8s(Some(&map(json!({"sidekey.dev/inject": "true"})))));
    assert!(uses_vault_k8s(Some(&map(json!({"vault.hashicorp.com/agent-inject": "true"})))));
}

#[test]
fn commands_map_to_a_signal_or_a_loopback_post_or_are_refused() {
    for (cmd, want) in [
        ("kill -HUP 1", Some("signal:SIGHUP")),
        ("pkill -HUP nginx", Some("signal:SIGHUP")),
        ("kill -s USR1 1", Some("signal:SIGUSR1")),
        ("killall -SIGHUP haproxy", Some("signal:SIGHUP")),
        ("curl -X POST http://127.0.0.1:8080/reload", Some("http://127.0.0.1:8080/reload")),
        ("curl -s http://localhost:9000/-/reload", Some("http://127.0.0.1:9000/-/reload")),
        ("curl http://example.com/reload", None),
        ("sh -c 'kill -HUP $(pidof app)'", None),
        ("kill -9 1", None),
        ("/app/reload.sh", None),
    ] {
        assert_eq!(on_change_of(cmd).as_deref(), want, "{cmd}");
    }
    let p = problems(json!({
        "vault.hashicorp.com/agent-inject": "true",
        "vault.hashicorp.com/agent-inject-secret-a": "kv/a",
        "vault.hashicorp.com/agent-inject-command-a": "/bin/reload.sh",
    }));
    assert!(p[0].contains("agent-inject-command-a") && p[0].contains("runs no shell"), "{p:?}");
    let p = problems(json!({
        "vault.hashicorp.com/agent-inject": "true",
        "vault.hashicorp.com/agent-inject-secret-a": "kv/a",
        "vault.hashicorp.com/agent-inject-command-a": "kill -HUP 1",
        "vault.hashicorp.com/agent-inject-secret-b": "kv/b",
        "vault.hashicorp.com/agent-inject-command-b": "curl -X POST http://127.0.0.1:8080/reload",
    }));
    assert!(p[0].contains("one way for the whole pod"), "{p:?}");
}

#[test]
fn what_cannot_be_translated_is_refused_by_name() {
    for (key, value, says) in [
        ("agent-configmap", "my-config", "ConfigMap"),
        ("agent-json-patch", "[]", "patch"),
        ("agent-init-json-patch", "[]", "patch"),
        ("agent-inject-token", "true", "token"),
        ("tls-skip-verify", "true", "verifies"),
        ("agent-inject-template-file-x", "/vault/configs/x.tmpl", "template file"),
        ("auth-config-type", "iam", "auto-auth"),
        ("agent-inject-secrets-typo", "x", "unknown"),
        ("auth-type", "aws", "kubernetes or jwt"),
        ("agent-inject-default-template", "yaml", "map or json"),
        ("agent-pre-populate-only", "yes", "ParseBool"),
    ] {
        let p = problems(json!({
            "vault.hashicorp.com/agent-inject": "true",
            "vault.hashicorp.com/agent-inject-secret-ok": "kv/ok",
            format!("vault.hashicorp.com/{key}"): value,
        }));
        assert!(p.iter().any(|p| p.contains(key) && p.contains(says)), "{key}: {p:?}");
    }
    for (extra, says) in [
        (json!({"vault.hashicorp.com/agent-inject-file-ok": "conf/app.json"}), "subdirectory"),
        (json!({"vault.hashicorp.com/agent-inject-file-ok": ".env"}), "starts with '.'"),
        (json!({"vault.hashicorp.com/secret-volume-path-ok": "/other"}), "one mount"),
        (json!({"vault.hashicorp.com/agent-inject-template-ok": "{{ with secret \"kv/ok\" }}"}), "line 1"),
        (
            json!({"vault.hashicorp.com/agent-inject-template-ok": "{{ with secret \"pki/issue/x\" \"=a\" }}{{ end }}"}),
            "no name",
        ),
        (json!({"vault.hashicorp.com/agent-inject-template-x": "static"}), "names no path"),
        (json!({"vault.hashicorp.com/error-on-missing-key-ok": "maybe"}), "ParseBool"),
        (
            json!({"vault.hashicorp.com/agent-inject-perms-nosuch": "0400"}),
            "no vault.hashicorp.com/agent-inject-secret-nosuch",
        ),
        (json!({"sidekey.dev/refresh": "1m"}), "not both"),
    ] {
        let mut a = map(json!({
            "vault.hashicorp.com/agent-inject": "true",
            "vault.hashicorp.com/agent-inject-secret-ok": "kv/ok",
        }));
        a.extend(map(extra.clone()));
        let p: Vec<String> = translate(&a).unwrap_err().iter().map(ToString::to_string).collect();
        assert!(p.iter().any(|p| p.contains(says)), "{extra}: {p:?}");
    }
}

#[test]
fn hostile_annotations_are_refused_without_panics() {
    for v in ["", " ", "{{", "}}{{", "\u{0}", "../../etc/passwd", &"{{ if 1 }}".repeat(100)] {
        for k in [
            "agent-inject-secret-",
            "agent-inject-template-x",
            "agent-inject-file-x",
            "agent-inject-secret-..",
            "agent-inject-secret-a/b",
        ] {
            let a = map(json!({
                "vault.hashicorp.com/agent-inject": "true",
                "vault.hashicorp.com/agent-inject-secret-x": "kv/x",
                format!("vault.hashicorp.com/{k}"): v,
            }));
            if let Ok(t) = translate(&a) {
                let m: Map<String, Value> =
                    t.annotations.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
                let _ = crate::annotations::parse(Some(&m));
            }
        }
    }
}

#[test]
fn a_flood_of_annotations_is_refused_at_once() {
    let mut a = map(json!({"vault.hashicorp.com/agent-inject": "true"}));
    for i in 0..5000 {
        a.insert(format!("vault.hashicorp.com/agent-inject-secret-s{i}"), json!("kv/x"));
    }
    let p = translate(&a).unwrap_err();
    assert_eq!(p.len(), 1);
    assert!(p[0].reason.contains("at most 1000"), "{:?}", p[0]);
}

#[test]
fn the_openbao_injectors_prefixes_read_the_same_vocabulary_and_are_named_as_written() {
    let with = |prefix: &str, extra: &[(&str, &str)]| {
        let mut m = Map::new();
        for (k, v) in [("agent-inject", "true"), ("role", "web"), ("agent-inject-secret-db", "database/creds/web")]
            .iter()
            .chain(extra)
        {
            m.insert(format!("{prefix}{k}"), json!(v));
        }
        m
    };
    let vault = translate(&with(PREFIX, &[])).unwrap();
    for prefix in ["openbao.openbao.org/", "openbao.org/"] {
        let a = with(prefix, &[]);
        assert_eq!(prefix_of(Some(&a)), Some(prefix));
        assert!(uses_vault_k8s(Some(&a)));
        let t = translate(&a).unwrap();
        assert_eq!(t.annotations, vault.annotations, "{prefix}");
        assert_eq!(t.origins["sidekey.dev/vault-role"], format!("{prefix}role"));
        // A problem names the annotation as the user wrote it.
        let p: Vec<String> =
            translate(&with(prefix, &[("auth-type", "aws")])).unwrap_err().iter().map(ToString::to_string).collect();
        assert!(p.iter().any(|p| p.contains(&format!("{prefix}auth-type")) && !p.contains(PREFIX)), "{p:?}");
        let t = translate(&with(prefix, &[("agent-cache-enable", "true")])).unwrap();
        assert!(t.notes.iter().any(|n| n.starts_with(&format!("{prefix}agent-cache-enable:"))), "{:?}", t.notes);
    }
    // One prefix per pod: vault-k8s's first; another's annotations are noted as ignored.
    let mut both = with(PREFIX, &[]);
    both.insert("openbao.org/role".into(), json!("other"));
    let t = translate(&both).unwrap();
    assert_eq!(t.annotations["sidekey.dev/vault-role"], "web");
    assert!(t.notes.iter().any(|n| n.starts_with("openbao.org/role: ignored")), "{:?}", t.notes);
    // However many there are, one note (each note is a warning to kubectl).
    for i in 0..1000 {
        both.insert(format!("openbao.org/x{i}"), json!("y"));
    }
    let t = translate(&both).unwrap();
    let ignored: Vec<_> = t.notes.iter().filter(|n| n.contains("ignored")).collect();
    assert_eq!(ignored.len(), 1, "{ignored:?}");
    assert!(ignored[0].contains("and 1000 more"), "{ignored:?}");
    // Not a prefix of another: openbao.org/ is not openbao.openbao.org/.
    assert_eq!(
        prefix_of(Some(&map(json!({"openbao.openbao.org/agent-inject": "true"})))),
        Some("openbao.openbao.org/")
    );
}
