//! Renders one file from a secret: `raw`, `json`, `dotenv`, `yaml` or a
//! minijinja `template`. Errors name the key or template line, never a value.

use serde_json::Value;
use sidekey::agent_config::FileSpec;
use sidekey::annotations::Format;
use zeroize::Zeroizing;

use crate::secret::{Secret, SecretBytes};

/// Why a file cannot be rendered (a permanent problem of the reference or
/// the template, not of the backend).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// `#key` does not exist in the secret.
    #[error("key {key:?} not found (the secret has: {available})")]
    MissingKey {
        /// The key asked for.
        key: String,
        /// The keys there are.
        available: String,
    },
    /// `raw` without `#key` on a secret with several fields.
    #[error("format raw needs a #key: the secret has several fields ({0})")]
    RawNeedsKey(String),
    /// `dotenv` needs fields whose names are env var names.
    #[error("format dotenv: {0}")]
    Dotenv(String),
    /// A template error (syntax, undefined variable).
    #[error("template: {0}")]
    Template(String),
    /// A Go template's execution error, naming the function or field.
    #[error(transparent)]
    Go(#[from] sidekey::gotemplate::Error),
    /// A key of a directory secret cannot be a file name.
    #[error("key {0:?} cannot be a file name (use letters, digits, '.', '_' and '-')")]
    BadFileName(String),
}

/// Follows `key` in `v`: a direct field first, then `.`-separated nesting.
pub fn select<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    if let Some(x) = v.get(key) {
        return Some(x);
    }
    key.split('.').try_fold(v, |cur, part| cur.get(part))
}

fn names(secret: &Secret) -> String {
    let n = secret.fields.field_names();
    if n.is_empty() { "no fields".into() } else { n.join(", ") }
}

fn scalar_bytes(v: &Value) -> Zeroizing<Vec<u8>> {
    match v {
        Value::String(s) => Zeroizing::new(s.as_bytes().to_vec()),
        other => Zeroizing::new(serde_json::to_vec(other).unwrap_or_default()),
    }
}

fn dotenv_quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '$' => out.push_str("\\$"),
            '`' => out.push_str("\\`"),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn is_env_name(k: &str) -> bool {
    sidekey::names::is_c_identifier(k)
}

/// Renders `spec` from `secret`.
///
/// # Errors
/// [`RenderError`] naming the key or template problem.
pub fn render(spec: &FileSpec, secret: &Secret) -> Result<SecretBytes, RenderError> {
    let fields = secret.fields.expose_secret();
    let selected: Option<&Value> = match spec.reference.key() {
        Some(k) => {
            Some(select(fields, k).ok_or_else(|| RenderError::MissingKey { key: k.into(), available: names(secret) })?)
        }
        None if fields.is_null() => None,
        None => Some(fields),
    };
    // A secret with no fields (an AWS binary or plain-string secret) is
    // written as is unless a format is asked for.
    let format = match spec.format {
        Some(f) => f,
        None if fields.is_null() => Format::Raw,
        None => spec.effective_format(),
    };
    let bytes: Zeroizing<Vec<u8>> = match (format, selected) {
        (Format::Raw, Some(v)) if spec.reference.key().is_some() => scalar_bytes(v),
        (Format::Raw, None) => {
            Zeroizing::new(secret.raw.as_ref().map(|r| r.expose_secret().to_vec()).unwrap_or_default())
        }
        (Format::Raw, Some(Value::Object(m))) if m.len() == 1 => {
            scalar_bytes(m.values().next().unwrap_or(&Value::Null))
        }
        (Format::Raw, Some(Value::Object(_))) => return Err(RenderError::RawNeedsKey(names(secret))),
        (Format::Raw, Some(v)) => scalar_bytes(v),
        (Format::Json, v) => {
            let raw_string;
            let v = match v {
                Some(v) => v,
                None => {
                    raw_string = Value::String(
                        String::from_utf8_lossy(secret.raw.as_ref().map_or(&[][..], |r| r.expose_secret()))
                            .into_owned(),
                    );
                    &raw_string
                }
            };
            let mut out = Zeroizing::new(serde_json::to_vec(v).unwrap_or_default());
            out.push(b'\n');
            out
        }
        (Format::Dotenv, Some(Value::Object(m))) => {
            let mut out = Zeroizing::new(String::new());
            for (k, v) in m {
                if !is_env_name(k) {
                    return Err(RenderError::Dotenv(format!("field {k:?} is not a valid variable name")));
                }
                out.push_str(k);
                out.push('=');
                match v {
                    Value::String(s) => dotenv_quote(&mut out, s),
                    other => dotenv_quote(&mut out, &Zeroizing::new(other.to_string())),
                }
                out.push('\n');
            }
            Zeroizing::new(out.as_bytes().to_vec())
        }
        (Format::Dotenv, _) => return Err(RenderError::Dotenv("the selected value has no fields".into())),
        (Format::Yaml, v) => {
            let v = v.cloned().unwrap_or(Value::Null);
            let text = Zeroizing::new(sidekey::yaml::to_yaml(&v));
            let mut v = v;
            wipe(&mut v);
            Zeroizing::new(text.as_bytes().to_vec())
        }
        (Format::GoTemplate, _) => {
            return Err(RenderError::Template("a Go template is rendered from the paths it reads (render_go)".into()));
        }
        (Format::Template, v) => {
            let template = spec.template.as_deref().unwrap_or_default();
            let ctx = match v {
                Some(Value::Object(_)) => v.cloned().unwrap_or(Value::Null),
                Some(other) => serde_json::json!({ "value": other }),
                None => serde_json::json!({
                    "value": String::from_utf8_lossy(secret.raw.as_ref().map_or(&[][..], |r| r.expose_secret())).into_owned()
                }),
            };
            let mut env = minijinja::Environment::new();
            env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
            let result = env.render_str(template, &ctx);
            let mut ctx = ctx;
            wipe(&mut ctx);
            match result {
                Ok(s) => {
                    let s = Zeroizing::new(s);
                    Zeroizing::new(s.as_bytes().to_vec())
                }
                Err(e) => {
                    let line = e.line().map(|l| format!(" (line {l})")).unwrap_or_default();
                    return Err(RenderError::Template(format!("{}{line}", e.kind())));
                }
            }
        }
    };
    Ok(SecretBytes::new(bytes.to_vec()))
}

/// What a Go template's `secret "<path>"` returns: the answer as
/// consul-template shows it (`.Data`, `.LeaseID`, `.LeaseDuration`,
/// `.Renewable`, `.Warnings`), KV v2 data under `.Data.data` beside
/// `.Data.metadata`.
fn consul_template_view(secret: &Secret) -> Value {
    let fields = secret.fields.expose_secret().clone();
    let data = match &secret.meta.kv2_metadata {
        Some(m) => serde_json::json!({ "data": fields, "metadata": m }),
        None => fields,
    };
    serde_json::json!({
        "Data": data,
        "LeaseID": secret.meta.lease_id,
        "LeaseDuration": secret.meta.lease_duration,
        "Renewable": secret.meta.renewable,
        "Warnings": Value::Null,
    })
}

/// What one of a Go template's `secret` calls was answered with.
pub struct TemplateSource<'a> {
    /// The path named.
    pub path: &'a str,
    /// The fields of a write; empty for a read.
    pub write: &'a [(String, String)],
    /// The answer.
    pub secret: &'a Secret,
}

/// Answers a Go template's `secret` calls from what the sources read.
struct Read<'a> {
    secrets: &'a [TemplateSource<'a>],
    /// The views handed out, wiped after the render.
    views: Vec<Value>,
}

impl sidekey::gotemplate::Resolver for Read<'_> {
    fn secret(&mut self, path: &str, args: &[(String, String)]) -> Result<Value, String> {
        let source = self.secrets.iter().find(|s| s.path == path && s.write == args).ok_or("not read by this agent")?;
        let view = consul_template_view(source.secret);
        self.views.push(view.clone());
        Ok(view)
    }
}

/// Renders `spec`'s Go template (`format: go-template`, parsed once when
/// the agent started) from the secrets of the paths it reads.
///
/// # Errors
/// [`RenderError::Template`] naming the line or function, never a value.
pub fn render_go(
    spec: &FileSpec,
    template: &sidekey::agent_config::GoTemplate,
    secrets: &[TemplateSource<'_>],
) -> Result<SecretBytes, RenderError> {
    let mut read = Read { secrets, views: Vec::new() };
    let result = template.template().render_with(&Value::Null, &mut read, spec.missing_key_error);
    for v in &mut read.views {
        wipe(v);
    }
    match result {
        Ok(out) => {
            let out = Zeroizing::new(out);
            Ok(SecretBytes::new(out.as_bytes().to_vec()))
        }
        Err(e) => Err(RenderError::Go(e)),
    }
}

/// Renders every field of a directory secret as its own file (raw values).
///
/// # Errors
/// A field whose name cannot be a file name.
pub fn render_dir(secret: &Secret) -> Result<Vec<(String, SecretBytes)>, RenderError> {
    let mut out = Vec::new();
    if let Value::Object(m) = secret.fields.expose_secret() {
        for (k, v) in m {
            let ok = !k.is_empty()
                && !k.starts_with('.')
                && k.len() <= 253
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !ok {
                return Err(RenderError::BadFileName(k.clone()));
            }
            out.push((k.clone(), SecretBytes::new(scalar_bytes(v).to_vec())));
        }
    }
    Ok(out)
}

fn wipe(v: &mut Value) {
    // Copies made for rendering are wiped too.
    drop(crate::secret::SecretValue::new(std::mem::take(v)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(reference: &str, format: Option<Format>, template: Option<&str>) -> FileSpec {
        FileSpec {
            name: "f".into(),
            reference: reference.parse().unwrap(),
            format,
            template: template.map(str::to_owned),
            delims: None,
            missing_key_error: false,
            mode: 0o440,
            optional: false,
            dir: false,
            cert: None,
        }
    }

    fn db() -> Secret {
        Secret::from_fields(json!({"username": "v-app-x1", "password": "p\"w$1", "port": 5432, "nested": {"a": "b"}}))
    }

    fn text(b: SecretBytes) -> String {
        String::from_utf8(b.expose_secret().to_vec()).unwrap()
    }

    /// The file's Go template, parsed as the agent parses it at start.
    fn parsed(f: &FileSpec) -> sidekey::agent_config::GoTemplate {
        sidekey::agent_config::GoTemplate::parse(f.template.as_deref().unwrap(), f.delims.as_ref()).unwrap()
    }

    fn read<'a>(path: &'a str, secret: &'a Secret) -> TemplateSource<'a> {
        TemplateSource { path, write: &[], secret }
    }

    #[test]
    fn a_go_template_sees_the_answer_as_consul_template_shows_it() {
        let mut kv2 = Secret::from_fields(json!({"password": "s3cr3t", "port": 5432}));
        kv2.meta.kv2_metadata = Some(json!({"version": 3, "destroyed": false}));
        let mut creds = db();
        creds.meta = crate::secret::Meta {
            lease_id: "database/creds/app/abc".into(),
            lease_duration: 60,
            renewable: true,
            kv2_metadata: None,
        };
        let t = r#"{{ with secret "secret/data/app" }}{{ .Data.data.password }} v{{ .Data.metadata.version }} {{ .Data.data.port }}{{ end }}
{{ with secret "database/creds/app" }}{{ .Data.username }} {{ .LeaseDuration }} {{ .Renewable }}{{ end }}
{{ with secret "secret/data/app" }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}
{{ end }}{{ end }}"#;
        let mut f = spec("vault:secret/data/app", Some(Format::GoTemplate), Some(t));
        let out = text(
            render_go(&f, &parsed(&f), &[read("secret/data/app", &kv2), read("database/creds/app", &creds)]).unwrap(),
        );
        assert_eq!(
            out,
            "s3cr3t v3 5432\nv-app-x1 60 true\ndata: map[password:s3cr3t port:5432]\nmetadata: map[destroyed:false version:3]\n"
        );
        // Errors name the line or function, never a value.
        f.template = Some(r#"{{ with secret "secret/data/app" }}{{ index .Data.data.password 1 }}{{ end }}"#.into());
        let e = render_go(&f, &parsed(&f), &[read("secret/data/app", &kv2)]).unwrap_err().to_string();
        assert!(e.contains("index") && !e.contains("s3cr3t"), "{e}");
        f.template = Some(r#"[[ with secret "secret/data/app" ]][[ .Data.data.port ]][[ end ]]"#.into());
        f.delims = Some("[[ ]]".parse().unwrap());
        assert_eq!(text(render_go(&f, &parsed(&f), &[read("secret/data/app", &kv2)]).unwrap()), "5432");
    }

    #[test]
    fn raw_selects_a_key_nested_keys_too() {
        assert_eq!(text(render(&spec("vault:d/c#password", None, None), &db()).unwrap()), "p\"w$1");
        assert_eq!(text(render(&spec("vault:d/c#port", None, None), &db()).unwrap()), "5432");
        assert_eq!(text(render(&spec("aws-sm:x#nested.a", None, None), &db()).unwrap()), "b");
    }

    #[test]
    fn raw_without_key_needs_a_single_field_or_raw_bytes() {
        let e = render(&spec("vault:d/c", Some(Format::Raw), None), &db()).unwrap_err();
        assert_eq!(e, RenderError::RawNeedsKey("username, password, port, nested".into()));
        let one = Secret::from_fields(json!({"certificate": "PEM"}));
        assert_eq!(text(render(&spec("vault:pki/cert/ca", Some(Format::Raw), None), &one).unwrap()), "PEM");
        let raw = Secret {
            fields: crate::secret::SecretValue::new(Value::Null),
            raw: Some(SecretBytes::new(vec![0, 1, 2])),
            meta: Default::default(),
        };
        assert_eq!(render(&spec("aws-sm:bin", None, None), &raw).unwrap().expose_secret(), &[0, 1, 2]);
    }

    #[test]
    fn missing_key_names_the_keys_not_the_values() {
        let e = render(&spec("vault:d/c#pasword", None, None), &db()).unwrap_err().to_string();
        assert!(e.contains("pasword") && e.contains("username") && !e.contains("v-app-x1"), "{e}");
    }

    #[test]
    fn json_dotenv_and_yaml() {
        let j = text(render(&spec("vault:d/c", None, None), &db()).unwrap());
        assert_eq!(serde_json::from_str::<Value>(&j).unwrap(), *db().fields.expose_secret());
        let flat = Secret::from_fields(json!({"USER": "a", "PASS": "x\"y$z\nw"}));
        let d = text(render(&spec("vault:d/c", Some(Format::Dotenv), None), &flat).unwrap());
        assert_eq!(d, "USER=\"a\"\nPASS=\"x\\\"y\\$z\\nw\"\n");
        assert!(render(&spec("vault:d/c", Some(Format::Dotenv), None), &db()).is_ok());
        let bad = Secret::from_fields(json!({"not-a-var": "x"}));
        assert!(render(&spec("vault:d/c", Some(Format::Dotenv), None), &bad).is_err());
        let y = text(render(&spec("vault:d/c", Some(Format::Yaml), None), &db()).unwrap());
        assert_eq!(sidekey::yaml::parse_documents(&y).unwrap()[0], *db().fields.expose_secret());
    }

    #[test]
    fn templates_render_fields_and_fail_on_undefined() {
        let s = spec(
            "vault:database/creds/app",
            Some(Format::Template),
            Some("postgres://{{ username }}:{{ password }}@db/x"),
        );
        assert_eq!(text(render(&s, &db()).unwrap()), "postgres://v-app-x1:p\"w$1@db/x");
        let s = spec("vault:d/c", Some(Format::Template), Some("{{ nope }}"));
        let e = render(&s, &db()).unwrap_err().to_string();
        assert!(e.starts_with("template:") && !e.contains("v-app-x1"), "{e}");
    }

    #[test]
    fn directory_keys_become_files_and_bad_names_are_refused() {
        let files = render_dir(&Secret::from_fields(json!({"API_KEY": "k", "tls.crt": "c"}))).unwrap();
        assert_eq!(files.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["API_KEY", "tls.crt"]);
        assert!(render_dir(&Secret::from_fields(json!({"../x": "k"}))).is_err());
        assert!(render_dir(&Secret::from_fields(json!({"..data": "k"}))).is_err());
    }
}
