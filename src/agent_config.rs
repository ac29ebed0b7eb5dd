//! The agent's configuration: what the injector hands the agent as JSON in
//! the `SIDEKEY_CONFIG` env var (or what `sidekey-agent --config FILE` reads).
//!
//! It holds references and settings, never a secret value, so it may appear
//! in the pod spec. Unknown keys are rejected, so a newer injector talking to
//! an older agent fails loudly instead of silently dropping a setting.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::contract::Delims;
use crate::contract::{Format, Lifecycle, OnChange};
use crate::duration;
use crate::names::file_name_problem;
use crate::reference::{Backend, Reference};
pub use crate::templates::{
    CheckedTemplate, CheckedTemplates, GoTemplate, TemplateError, checked_template, system_path,
};

/// The env var that carries the JSON.
pub const ENV_VAR: &str = "SIDEKEY_CONFIG";

/// The whole agent configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentConfig {
    /// Where the files go (the tmpfs mount).
    pub mount_path: String,
    /// Where the agent keeps its Vault token and leases so that a restart
    /// adopts them instead of issuing new credentials (a volume only the
    /// agent mounts); absent: nothing is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    /// Sidecar (keep files fresh), init-only (render once) or legacy.
    #[serde(default)]
    pub lifecycle: Lifecycle,
    /// How often static secrets are checked for a new version.
    #[serde(with = "duration::serde_text", default = "default_refresh")]
    pub refresh: Duration,
    /// How long to wait at start for every file before giving up.
    #[serde(with = "duration::serde_text", default = "default_startup_timeout")]
    pub startup_timeout: Duration,
    /// How the app learns of new files.
    #[serde(default, skip_serializing_if = "is_none_on_change")]
    pub on_change: OnChange,
    /// The files (and directories) to render.
    pub files: Vec<FileSpec>,
    /// Vault settings; present when a file uses a `vault:` reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault: Option<VaultConfig>,
    /// AWS settings; present when a file uses an `aws-sm:` reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsConfig>,
    /// Where the agent serves `/metrics`, `/readyz` and `/healthz`
    /// (`127.0.0.1:9102`); absent: not served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
}

fn default_refresh() -> Duration {
    Duration::from_secs(300)
}

fn default_startup_timeout() -> Duration {
    Duration::from_secs(120)
}

fn is_none_on_change(o: &OnChange) -> bool {
    *o == OnChange::None
}

/// One rendered file, or one directory of files (a mapped `envFrom`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileSpec {
    /// The file name under the mount path (see `names::file_name_problem`).
    pub name: String,
    /// Where the secret lives.
    #[serde(rename = "ref")]
    pub reference: Reference,
    /// How it is rendered; default raw with a key, json without.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// The template for `format: template` or `go-template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// A Go template's delimiters, when not `{{ }}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delims: Option<Delims>,
    /// A Go template fails on a field its map does not have, instead of
    /// printing `<no value>`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub missing_key_error: bool,
    /// Octal mode, e.g. `"0440"`.
    #[serde(with = "octal")]
    pub mode: u32,
    /// A missing secret is not an error and does not delay readiness.
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
    /// Render every key of the secret as a file in a directory `name`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dir: bool,
    /// A certificate from the PKI engine: the directory `name` gets
    /// `tls.crt`, `tls.key` and `ca.crt` (the reference names the endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<crate::cert::CertRequest>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl FileSpec {
    /// The format in effect: the explicit one, else raw when a key is
    /// selected and json otherwise.
    pub fn effective_format(&self) -> Format {
        self.format.unwrap_or(if self.reference.key().is_some() { Format::Raw } else { Format::Json })
    }
}

/// Vault / OpenBao connection and login.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VaultConfig {
    /// `https://vault.example:8200`.
    pub addr: String,
    /// Vault Enterprise / OpenBao namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The namespace the agent logs in to, when it differs from `namespace`
    /// (a parent's auth method reading a child's secrets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_namespace: Option<String>,
    /// How the agent logs in.
    pub auth: VaultAuth,
    /// A CA bundle file to trust for the Vault TLS connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<String>,
    /// PEM certificates to trust for the Vault TLS connection (the
    /// injector's `vault.caCert`); with `caCert`, both are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Revoke the token and leases on SIGTERM.
    #[serde(default, skip_serializing_if = "is_false")]
    pub revoke_on_shutdown: bool,
    /// The paths under `auth/` and `sys/` that Go templates may call,
    /// each named by the injector's policy; a template calling any other
    /// path there is refused (see [`system_path`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub template_system_paths: Vec<String>,
}

/// A Vault login method.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", tag = "method")]
pub enum VaultAuth {
    /// Kubernetes auth with the projected service-account token, re-read at
    /// each login.
    #[serde(rename_all = "camelCase")]
    Kubernetes {
        /// Auth method mount, e.g. `kubernetes`.
        mount: String,
        /// Vault role.
        role: String,
        /// The JWT file.
        token_path: String,
    },
    /// JWT auth with the projected service-account token, re-read at each
    /// login: Vault checks the token's signature itself (JWKS or the
    /// issuer's public keys) instead of calling the cluster's TokenReview.
    #[serde(rename_all = "camelCase")]
    Jwt {
        /// Auth method mount, e.g. `jwt`.
        mount: String,
        /// Vault role.
        role: String,
        /// The JWT file.
        token_path: String,
    },
    /// A Vault token read from a file (development).
    #[serde(rename_all = "camelCase")]
    Token {
        /// The token file.
        token_path: String,
    },
}

/// AWS Secrets Manager settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AwsConfig {
    /// Region; absent: from the ARN or the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A role to assume with the default chain's credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// Endpoint override (VPC endpoints, tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

mod octal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{m:04o}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let s = String::deserialize(d)?;
        crate::contract::parse_file_mode(&s).map_err(serde::de::Error::custom)
    }
}

/// Why an agent config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AgentConfigError {
    /// Not valid JSON, an unknown key or a wrong type.
    #[error("agent config: {path}: {message}")]
    Schema {
        /// Where.
        path: String,
        /// What.
        message: String,
    },
    /// Values that parse but cannot work, every one.
    #[error("agent config: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl AgentConfig {
    /// Parses and validates the JSON.
    ///
    /// # Errors
    /// [`AgentConfigError`] naming the key and the reason.
    pub fn from_json(text: &str) -> Result<Self, AgentConfigError> {
        let config = Self::deserialize_json(text)?;
        config.validate()?;
        Ok(config)
    }

    fn deserialize_json(text: &str) -> Result<Self, AgentConfigError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| AgentConfigError::Schema { path: e.path().to_string(), message: e.inner().to_string() })
    }

    /// Validates the config and keeps what validation parsed: what the
    /// agent runs.
    ///
    /// # Errors
    /// As [`AgentConfig::validate`].
    pub fn check(self) -> Result<ValidConfig, AgentConfigError> {
        let go = self.checked()?;
        Ok(ValidConfig { config: self, go })
    }

    /// Compact JSON for the env var.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The backends the files use.
    pub fn backends(&self) -> Vec<Backend> {
        let mut b: Vec<Backend> = self.files.iter().map(|f| f.reference.backend()).collect();
        b.sort();
        b.dedup();
        b
    }

    /// Checks names, uniqueness and that each used backend is configured.
    ///
    /// # Errors
    /// [`AgentConfigError::Invalid`] listing every problem.
    pub fn validate(&self) -> Result<(), AgentConfigError> {
        self.checked().map(drop)
    }

    /// [`AgentConfig::validate`], each file's Go template parsed once.
    fn checked(&self) -> Result<Vec<Option<Arc<GoTemplate>>>, AgentConfigError> {
        let mut go = Vec::with_capacity(self.files.len());
        let mut problems = Vec::new();
        if let Some(p) = crate::contract::mount_path_problem(&self.mount_path) {
            problems.push(format!("mountPath: {p}"));
        }
        if let Some(p) = self.state_dir.as_deref().and_then(crate::contract::mount_path_problem) {
            problems.push(format!("stateDir: {p}"));
        }
        let mut seen = BTreeMap::new();
        for (i, f) in self.files.iter().enumerate() {
            if let Some(p) = file_name_problem(&f.name) {
                problems.push(format!("files[{i}].name: {p}"));
            }
            if let Some(j) = seen.insert(f.name.as_str(), i) {
                problems.push(format!("files[{i}].name: {:?} is also files[{j}].name", f.name));
            }
            let parsed = match (f.effective_format(), &f.template) {
                (fmt @ (Format::Template | Format::GoTemplate), None) => {
                    problems.push(format!("files[{i}].template: format {} needs a template", fmt.name()));
                    None
                }
                (Format::GoTemplate, Some(t)) => match GoTemplate::parse(t, f.delims.as_ref()) {
                    Err(e) => {
                        problems.push(format!("files[{i}].template: {e}"));
                        None
                    }
                    Ok(template) => {
                        let listed = self.vault.as_ref().map_or(&[][..], |v| &v.template_system_paths[..]);
                        for c in template.calls().iter().filter(|c| system_path(&c.path).is_some()) {
                            if !listed.contains(&c.path) {
                                problems.push(format!(
                                    "files[{i}].template: secret {:?}: a template calls a path under auth/ or sys/ only when vault.templateSystemPaths lists it (the injector's policy named it)",
                                    c.path
                                ));
                            }
                        }
                        Some(Arc::new(template))
                    }
                },
                _ => None,
            };
            go.push(parsed);
        }
        for b in self.backends() {
            match b {
                Backend::Vault if self.vault.is_none() => problems.push("vault: files use vault: references".into()),
                _ => {}
            }
        }
        if problems.is_empty() { Ok(go) } else { Err(AgentConfigError::Invalid(problems)) }
    }
}

/// An [`AgentConfig`] that passed validation, with each file's Go template
/// as validation parsed it: the agent renders from these, so a template's
/// text is parsed once per agent start.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    config: AgentConfig,
    /// Per file (by index): its Go template, for `format: go-template`.
    go: Vec<Option<Arc<GoTemplate>>>,
}

impl ValidConfig {
    /// Parses the JSON and validates it, once.
    ///
    /// # Errors
    /// [`AgentConfigError`] naming the key and the reason.
    pub fn from_json(text: &str) -> Result<ValidConfig, AgentConfigError> {
        AgentConfig::deserialize_json(text)?.check()
    }

    /// The Go template of `files[file]`, when its format is go-template.
    pub fn go_template(&self, file: usize) -> Option<&Arc<GoTemplate>> {
        self.go.get(file).and_then(Option::as_ref)
    }
}

impl std::ops::Deref for ValidConfig {
    type Target = AgentConfig;

    fn deref(&self) -> &AgentConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AgentConfig {
        AgentConfig {
            mount_path: "/run/secrets/sidekey".into(),
            state_dir: None,
            lifecycle: Lifecycle::Sidecar,
            refresh: Duration::from_secs(300),
            startup_timeout: Duration::from_secs(120),
            on_change: OnChange::None,
            files: vec![FileSpec {
                name: "db-password".into(),
                reference: "vault:secret/data/app/db#password".parse().unwrap(),
                format: None,
                template: None,
                delims: None,
                missing_key_error: false,
                mode: 0o440,
                optional: false,
                dir: false,
                cert: None,
            }],
            vault: Some(VaultConfig {
                addr: "https://vault:8200".into(),
                namespace: None,
                auth_namespace: None,
                auth: VaultAuth::Kubernetes {
                    mount: "kubernetes".into(),
                    role: "app".into(),
                    token_path: "/var/run/secrets/sidekey.dev/serviceaccount/token".into(),
                },
                ca_cert: None,
                ca_pem: None,
                revoke_on_shutdown: false,
                template_system_paths: Vec::new(),
            }),
            aws: None,
            metrics_addr: None,
        }
    }

    #[test]
    fn a_valid_config_carries_each_go_template_parsed_once_and_writes_the_same_json() {
        let mut c = sample();
        c.files[0].format = Some(Format::GoTemplate);
        c.files[0].template = Some(r#"{{ with secret "database/creds/app" }}{{ .Data.username }}{{ end }}"#.into());
        let mut plain = c.files[0].clone();
        plain.name = "plain".into();
        plain.format = None;
        plain.template = None;
        c.files.push(plain);
        let json = c.to_json();
        let valid = ValidConfig::from_json(&json).unwrap();
        assert_eq!(valid.go_template(0).unwrap().calls()[0].path, "database/creds/app");
        assert!(valid.go_template(1).is_none());
        assert_eq!(valid.to_json(), json);
        assert_eq!(*valid, c);
        // Errors stay typed until they are reported.
        let e = GoTemplate::parse(r#"{{ secret "a/b" "=x" }}"#, None).unwrap_err();
        assert_eq!(e, TemplateError::UnnamedArgument { path: "a/b".into() });
        assert!(matches!(GoTemplate::parse("{{ if }}", None), Err(TemplateError::Go(_))));
    }

    #[test]
    fn the_agent_calls_auth_and_sys_paths_from_templates_only_when_listed() {
        let mut c = sample();
        c.files[0].format = Some(Format::GoTemplate);
        c.files[0].template = Some(r#"{{ with secret "auth/token/lookup-self" }}{{ .Data.id }}{{ end }}"#.into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("files[0].template: secret \"auth/token/lookup-self\": a template calls a path under auth/ or sys/ only when vault.templateSystemPaths lists it"), "{e}");
        c.vault.as_mut().unwrap().template_system_paths = vec!["auth/token/lookup-self".into()];
        assert!(c.validate().is_ok());
        let json = c.to_json();
        assert!(json.contains(r#""templateSystemPaths":["auth/token/lookup-self"]"#), "{json}");
        assert_eq!(AgentConfig::from_json(&json).unwrap(), c);
    }

    #[test]
    fn json_round_trips() {
        let c = sample();
        let json = c.to_json();
        assert!(json.contains("\"mode\":\"0440\""), "{json}");
        assert!(json.contains("\"method\":\"kubernetes\""), "{json}");
        assert_eq!(AgentConfig::from_json(&json).unwrap(), c);
    }

    #[test]
    fn rejects_unknown_keys_and_bad_names() {
        let e = AgentConfig::from_json(r#"{"mountPath":"/x","files":[],"bogus":1}"#).unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = AgentConfig::from_json(r#"{"mountPath":"/x","files":[{"name":"../x","ref":"vault:a/b","mode":"0440"}],"vault":{"addr":"http://v","auth":{"method":"token","tokenPath":"/t"}}}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("files[0].name"), "{e}");
        let e = AgentConfig::from_json(r#"{"mountPath":"/x","files":[{"name":"x","ref":"vault:a/b","mode":"0440"}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("vault"), "{e}");
    }

    #[test]
    fn default_format_follows_the_key() {
        let mut f = sample().files.remove(0);
        assert_eq!(f.effective_format(), Format::Raw);
        f.reference = f.reference.without_key();
        assert_eq!(f.effective_format(), Format::Json);
    }
}
