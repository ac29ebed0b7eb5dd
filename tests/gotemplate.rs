//! The Go template engine (`sidekey::gotemplate`) against the real thing:
//! the same templates rendered by OpenBao Agent (`bao agent`, the agent
//! vault-k8s injects) and by sidekey against the same OpenBao must be the
//! same bytes — vault-k8s's default template (Go's map printing), and
//! templates as people write them.

#![allow(clippy::unwrap_used, clippy::disallowed_methods, missing_docs)]

use std::process::Command;

use serde_json::{Value, json};
use sidekey::gotemplate::{Resolver, Template};
use sidekey_testenv::{OpenBao, tool};

/// vault-k8s's template for `agent-inject-secret-<name>` without a template.
fn default_template(path: &str) -> String {
    format!(
        "{{{{ with secret \"{path}\" }}}}{{{{ range $k, $v := .Data }}}}{{{{ $k }}}}: {{{{ $v }}}}\n{{{{ end }}}}{{{{ end }}}}"
    )
}

/// Reads through the OpenBao API and shows the answer as consul-template does.
struct Api<'a>(&'a OpenBao);

impl Resolver for Api<'_> {
    fn secret(&mut self, path: &str, args: &[(String, String)]) -> Result<Value, String> {
        assert!(args.is_empty(), "no writes here");
        let r = self.0.api("GET", path, None)?;
        Ok(json!({"Data": r["data"], "LeaseID": r["lease_id"], "LeaseDuration": r["lease_duration"],
                  "Renewable": r["renewable"], "Warnings": r["warnings"]}))
    }
}

#[test]
fn templates_render_byte_for_byte_as_openbao_agent_renders_them() {
    let bao = OpenBao::start();
    bao.kv_put(
        "app",
        json!({"password": "s3cr3t", "user": "app", "port": 5432, "ratio": 1.5, "tls": true,
               "tags": ["a", "b"], "nested": {"k": "v", "n": null, "a": [1, {"z": 1, "b": 2}]}, "empty": "",
               "html": "<a href=\"x\">&</a>"}),
    );
    bao.api("POST", "sys/mounts/kv1", Some(json!({"type": "kv", "options": {"version": "1"}}))).unwrap();
    bao.api("POST", "kv1/legacy", Some(json!({"api_key": "k-1", "count": 3}))).unwrap();
    let templates: Vec<(&str, String)> = vec![
        ("default-kv2", default_template("secret/data/app")),
        ("default-kv1", default_template("kv1/legacy")),
        (
            "conn",
            "{{- with secret \"secret/data/app\" -}}\npostgresql://{{ .Data.data.user }}:{{ .Data.data.password }}@db:{{ .Data.data.port }}/app\n{{- end }}\n".into(),
        ),
        (
            "exports",
            "{{ with secret \"secret/data/app\" }}{{ range $k, $v := .Data.data }}export {{ $k | toUpper }}=\"{{ $v }}\"\n{{ end }}{{ end }}".into(),
        ),
        ("json", "{{ with secret \"secret/data/app\" }}{{ .Data.data | toJSON }}{{ end }}".into()),
        ("json-pretty", "{{ with secret \"secret/data/app\" }}{{ .Data.data | toJSONPretty }}{{ end }}".into()),
        (
            "logic",
            "{{ with secret \"secret/data/app\" }}{{ if .Data.data.tls }}https{{ else }}http{{ end }}://{{ index .Data.data \"user\" }} v{{ .Data.metadata.version }} {{ len .Data.data.tags }} {{ .Data.data.missing }}{{ end }}".into(),
        ),
        (
            "kinds",
            "{{ with secret \"secret/data/app\" }}{{ .Data.data.nested }} {{ .Data.data.tags }} {{ .Data.data.ratio }} {{ .Data.data.tls }} [{{ .Data.data.empty }}] {{ printf \"%d %v %s\" 7 .Data.data.port .Data.data.ratio }} {{ eq .Data.data.user \"app\" }} {{ len .Data.data.tags }}{{ range $i, $t := .Data.data.tags }} {{ $i }}={{ $t }}{{ end }}{{ range .Data.data.none }}x{{ else }} none{{ end }}{{ end }}\n".into(),
        ),
        (
            "v1-fields",
            "{{ with secret \"kv1/legacy\" }}key={{ .Data.api_key }} count={{ .Data.count }} {{ printf \"%s/%d\" .Data.api_key .Data.count }}{{ end }}".into(),
        ),
    ];

    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, &bao.token).unwrap();
    let mut hcl = format!(
        "vault {{\n  address = \"{}\"\n}}\nexit_after_auth = true\nauto_auth {{\n  method \"token_file\" {{\n    config = {{\n      token_file_path = \"{}\"\n    }}\n  }}\n}}\n",
        bao.addr,
        token.display()
    );
    for (name, contents) in &templates {
        hcl.push_str(&format!(
            "template {{\n  contents = {}\n  destination = \"{}\"\n}}\n",
            serde_json::to_string(contents).unwrap(),
            dir.path().join(name).display()
        ));
    }
    std::fs::write(dir.path().join("agent.hcl"), &hcl).unwrap();
    let out = Command::new(tool("SIDEKEY_BAO"))
        .args(["agent", &format!("-config={}", dir.path().join("agent.hcl").display())])
        .env("HOME", dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bao agent: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, contents) in &templates {
        let theirs = std::fs::read_to_string(dir.path().join(name))
            .unwrap_or_else(|e| panic!("{name}: bao agent wrote nothing: {e}"));
        let ours = Template::parse(contents).unwrap().render(&Value::Null, &mut Api(&bao)).unwrap();
        assert_eq!(ours, theirs, "{name}: sidekey and OpenBao Agent differ");
    }
}
