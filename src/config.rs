//! The injector's configuration: the defaults a pod's annotations may
//! override, which backends are on, and the limits on what an annotation may
//! choose (the Vault address allowlist).
//!
//! Loaded from YAML with every unknown key rejected by name; see
//! `docs/configuration.md` for the file format. `InjectorConfig::default()`
//! is what the webhook uses without a file: closed where a cluster must be
//! (no annotation chooses another Vault address). `sidekey inject` without
//! `--config` uses [`InjectorConfig::for_files`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::contract::{AuthMethod, vault_addr_problem};
use crate::contract::{EnvMode, Lifecycle};
use crate::duration;
use crate::quantity::Quantity;
use crate::reference::Backend;

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The YAML does not parse.
    #[error("config: {0}")]
    Yaml(#[from] crate::yaml::YamlError),
    /// A key is unknown or a value has the wrong type; names the key's path.
    #[error("config: {path}: {message}")]
    Schema {
        /// The path of the offending key, e.g. `vault.allowedAddrs[0]`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Values that parse but are not usable, every one of them.
    #[error("config: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// The whole injector configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct InjectorConfig {
    /// The agent container.
    pub agent: AgentDefaults,
    /// Defaults for pod-level settings.
    pub defaults: PodDefaults,
    /// Which secret backends pods may use.
    pub backends: Backends,
    /// Vault / OpenBao settings.
    pub vault: VaultDefaults,
    /// AWS settings.
    pub aws: AwsDefaults,
    /// Which namespaces may use which backends and references.
    pub policy: Policy,
    /// Other injectors' annotations accepted as they are.
    pub compatibility: Compatibility,
}

/// Other injectors' annotations the injector accepts (docs/vault-k8s.md).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Compatibility {
    /// Pods annotated for the Vault Agent injector (`vault.hashicorp.com/*`)
    /// are injected with sidekey's agent, their annotations translated.
    pub vault_k8s: bool,
}

/// What a namespace that matches no rule may do.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyDefault {
    /// Every enabled backend and reference.
    #[default]
    Allow,
    /// Nothing: pods there cannot be injected.
    Deny,
}

/// Namespace policy: defense in depth on top of Vault and AWS policies,
/// which remain the real authority. The first rule whose `namespaces`
/// matches the pod's namespace decides.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Policy {
    /// For namespaces that match no rule.
    pub default: PolicyDefault,
    /// The rules, in order.
    pub rules: Vec<PolicyRule>,
}

/// One policy rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicyRule {
    /// Namespace names; `*` matches any characters (`team-*`).
    pub namespaces: Vec<String>,
    /// Allowed backends (`vault`, `aws`, `file`); absent: every enabled one.
    #[serde(default)]
    pub backends: Option<Vec<String>>,
    /// Allowed references; `*` matches any characters
    /// (`vault:secret/data/team-a/*`); absent: any.
    #[serde(default)]
    pub references: Option<Vec<String>>,
    /// The Vault login settings pods may choose themselves, as annotation
    /// names (`vault-role`, `vault-auth-method`, `vault-auth-mount`,
    /// `vault-namespace`, `vault-auth-namespace`); absent: all of them; `[]`:
    /// none, the cluster's defaults apply.
    #[serde(default)]
    pub overrides: Option<Vec<String>>,
    /// The paths Go templates may write to (`secret "<path>" "k=v"`,
    /// `pkiCert`: PKI issuing, token creation…), as `vault:` patterns with
    /// `*`; absent: none. A write is a request that creates something, so
    /// it is allowed only where the policy names it.
    #[serde(default)]
    pub writes: Option<Vec<String>>,
}

/// The annotations that choose how the agent logs in to Vault, which a
/// policy rule's `overrides` may restrict.
pub const LOGIN_OVERRIDES: [&str; 5] =
    ["vault-role", "vault-auth-method", "vault-auth-mount", "vault-namespace", "vault-auth-namespace"];

/// `*`-glob matching (any run of characters, `/` included).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || !text[first.len()..].ends_with(last) || text.len() < first.len() + last.len() {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

impl Policy {
    /// The rule that decides for `namespace`: the first whose
    /// `namespaces` match it.
    fn rule_for(&self, namespace: &str) -> Option<&PolicyRule> {
        self.rules.iter().find(|r| r.namespaces.iter().any(|p| glob_match(p, namespace)))
    }

    /// Why a pod in `namespace` may not set the login annotation `key`
    /// (`vault-role`, …), if it may not.
    pub fn override_refusal(&self, namespace: &str, key: &str) -> Option<String> {
        let rule = self.rule_for(namespace)?;
        let allowed = rule.overrides.as_ref()?;
        (!allowed.iter().any(|a| a == key)).then(|| {
            let list = if allowed.is_empty() { "none".to_owned() } else { allowed.join(", ") };
            format!(
                "pods in namespace {namespace:?} may not choose their Vault login; the injector's policy sets it (overrides allowed: {list})"
            )
        })
    }

    /// Why a Go template in `namespace` may not make `call`, if it may
    /// not. A read is judged as a `vault:` reference is; a write only by
    /// the namespace rule's `writes`. Paths under `auth/` and `sys/` reach
    /// the agent's own token and Vault's configuration: they are refused
    /// unless a pattern that itself starts with `vault:auth/` or
    /// `vault:sys/` allows them.
    pub fn template_refusal(&self, namespace: &str, call: &crate::gotemplate::SecretCall) -> Option<String> {
        let path = &call.path;
        let reference = crate::reference::Reference::Vault { path: path.clone(), key: None };
        let rule = self.rule_for(namespace);
        let system = crate::templates::system_path(path);
        let explicit = |p: &String| system.is_none_or(|prefix| p.starts_with(&format!("vault:{prefix}/")));
        if call.is_write() {
            let patterns = rule.and_then(|r| r.writes.as_ref()).filter(|w| !w.is_empty());
            let Some(patterns) = patterns else {
                return Some(format!(
                    "a template may not write to {path} in namespace {namespace:?}: the injector's policy names no paths templates may write there (policy.rules[].writes)"
                ));
            };
            if let Some(reason) = rule.and_then(|r| backend_refusal(r, &reference, namespace)) {
                return Some(reason);
            }
            let text = reference.to_string();
            if !patterns.iter().any(|p| glob_match(p, &text) && explicit(p)) {
                return Some(format!(
                    "a template may not write to {path} in namespace {namespace:?} (writes allowed: {})",
                    patterns.join(", ")
                ));
            }
            return None;
        }
        if let Some(reason) = self.refusal(namespace, &reference) {
            return Some(reason);
        }
        let prefix = system?;
        let text = reference.to_string();
        let named = rule
            .and_then(|r| r.references.as_ref())
            .is_some_and(|ps| ps.iter().any(|p| glob_match(p, &text) && explicit(p)));
        (!named).then(|| {
            format!(
                "a template may not read {path}: paths under {prefix}/ reach the agent's own token and Vault's configuration, and are read only where the injector's policy names them (policy.rules[].references: [\"vault:{prefix}/…\"])"
            )
        })
    }

    /// Why `reference` may not be used in `namespace`, if it may not.
    pub fn refusal(&self, namespace: &str, reference: &crate::reference::Reference) -> Option<String> {
        let rule = self.rule_for(namespace);
        let Some(rule) = rule else {
            return match self.default {
                PolicyDefault::Allow => None,
                PolicyDefault::Deny => {
                    Some(format!("the injector's policy allows no secrets in namespace {namespace:?}"))
                }
            };
        };
        if let Some(reason) = backend_refusal(rule, reference, namespace) {
            return Some(reason);
        }
        if let Some(patterns) = &rule.references {
            let text = reference.to_string();
            if !patterns.iter().any(|p| glob_match(p, &text)) {
                return Some(format!(
                    "reference {text} is not allowed in namespace {namespace:?} (allowed: {})",
                    patterns.join(", ")
                ));
            }
        }
        None
    }
}

/// Why `rule` does not allow `reference`'s backend, if it does not.
fn backend_refusal(rule: &PolicyRule, reference: &crate::reference::Reference, namespace: &str) -> Option<String> {
    let backend = reference.backend().as_str();
    let backends = rule.backends.as_ref()?;
    (!backends.iter().any(|b| b == backend)).then(|| {
        format!("the {backend} backend is not allowed in namespace {namespace:?} (allowed: {})", backends.join(", "))
    })
}

/// Settings of the container the injector adds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AgentDefaults {
    /// The agent image, ideally pinned by digest.
    pub image: String,
    /// `imagePullPolicy` of the agent containers.
    pub image_pull_policy: String,
    /// The UID the agent runs as when it does not run as the app's UID.
    pub uid: u32,
    /// CPU and memory of the agent; `sidekey.dev/agent-*` annotations win.
    pub resources: Resources,
    /// How long the agent may take to render every file at start.
    #[serde(with = "duration::serde_text")]
    pub startup_timeout: Duration,
    /// The port each agent serves `/metrics` (and `/readyz`) on; absent:
    /// agents serve no metrics.
    pub metrics_port: Option<u16>,
    /// Where that port listens: `loopback` (127.0.0.1, the default: only
    /// the pod's own containers reach it) or `pod-ip` (every address,
    /// declared as container port `sidekey-metrics` so a PodMonitor finds
    /// it; the chart sets it with `podMonitor.enabled`).
    pub metrics_listen: MetricsListen,
}

/// Where an agent's metrics port listens.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum MetricsListen {
    /// 127.0.0.1: reachable from the pod's own network namespace only.
    #[default]
    Loopback,
    /// Every address: Prometheus scrapes the pod IP.
    PodIp,
}

impl Default for AgentDefaults {
    fn default() -> Self {
        AgentDefaults {
            image: format!("ghcr.io/sidekey/sidekey-agent:{}", env!("CARGO_PKG_VERSION")),
            image_pull_policy: "IfNotPresent".into(),
            uid: 65532,
            resources: Resources::default(),
            startup_timeout: Duration::from_secs(120),
            metrics_port: None,
            metrics_listen: MetricsListen::Loopback,
        }
    }
}

/// Requests and limits of the agent container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Resources {
    /// `requests.cpu` / `requests.memory`.
    pub requests: CpuMemory,
    /// `limits.cpu` / `limits.memory`.
    pub limits: CpuMemory,
}

/// A CPU and a memory quantity.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CpuMemory {
    /// CPU, e.g. `10m`.
    pub cpu: Quantity,
    /// Memory, e.g. `16Mi`.
    pub memory: Quantity,
}

impl Default for Resources {
    /// Small on purpose: the agent is meant to live in a few MiB.
    #[allow(clippy::unwrap_used)]
    fn default() -> Self {
        let q = |s: &str| s.parse::<Quantity>().unwrap();
        Resources {
            requests: CpuMemory { cpu: q("5m"), memory: q("8Mi") },
            limits: CpuMemory { cpu: q("100m"), memory: q("32Mi") },
        }
    }
}

/// Defaults of the pod-level annotations.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct PodDefaults {
    /// `sidekey.dev/mount-path`.
    pub mount_path: String,
    /// `sidekey.dev/lifecycle`.
    pub lifecycle: Lifecycle,
    /// `sidekey.dev/env`.
    pub env: EnvMode,
    /// `sidekey.dev/refresh`.
    #[serde(with = "duration::serde_text")]
    pub refresh: Duration,
    /// `sizeLimit` of the in-memory secrets volume.
    pub volume_size_limit: Quantity,
}

impl Default for PodDefaults {
    #[allow(clippy::unwrap_used)]
    fn default() -> Self {
        PodDefaults {
            mount_path: "/run/secrets/sidekey".into(),
            lifecycle: Lifecycle::Sidecar,
            env: EnvMode::File,
            refresh: Duration::from_secs(300),
            volume_size_limit: "4Mi".parse().unwrap(),
        }
    }
}

/// Which backends pods may reference.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Backends {
    /// `vault:` references.
    pub vault: bool,
    /// `aws-sm:` references and Secrets Manager ARNs.
    pub aws: bool,
    /// `file:` references (development only).
    pub file: bool,
}

impl Default for Backends {
    fn default() -> Self {
        Backends { vault: true, aws: true, file: false }
    }
}

impl Backends {
    /// Whether `backend` is enabled.
    pub fn enabled(&self, backend: Backend) -> bool {
        match backend {
            Backend::Vault => self.vault,
            Backend::Aws => self.aws,
            Backend::File => self.file,
        }
    }
}

/// Vault / OpenBao defaults.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct VaultDefaults {
    /// The address the agent talks to unless `sidekey.dev/vault-addr` says otherwise.
    pub addr: String,
    /// Addresses `sidekey.dev/vault-addr` may choose. Absent: any address
    /// (fine for the CLI on your own manifests); a list: only these (what a
    /// cluster's webhook should use, so that no annotation can send a
    /// credential to a server of its choosing). `addr` is always allowed.
    pub allowed_addrs: Option<Vec<String>>,
    /// The Vault role; absent: the pod's service account name. May name
    /// the pod's namespace and service account as `{namespace}` and
    /// `{serviceAccount}` (`k8s-{namespace}-{serviceAccount}`), so one Vault
    /// serves many clusters and namespaces with one naming rule.
    pub role: Option<String>,
    /// How the agent logs in with the pod's projected service-account token.
    pub auth_method: AuthMethod,
    /// The mount path of that auth method.
    pub auth_mount: String,
    /// The Vault Enterprise / OpenBao namespace.
    pub namespace: Option<String>,
    /// The namespace the agents log in to, when the auth method lives
    /// elsewhere than the secrets (a parent namespace's auth, a child's
    /// secrets); absent: `namespace`.
    pub auth_namespace: Option<String>,
    /// The audience of the projected service-account token the agent logs in with.
    pub audience: String,
    /// The lifetime kubelet gives that token (it rotates it at 80%).
    pub token_expiration_seconds: u32,
    /// PEM certificates the agents trust for Vault's TLS (a private CA);
    /// absent: the system roots in the agent image. Passed in the agent's
    /// config (certificates are public), so it works in every namespace.
    pub ca_cert: Option<String>,
    /// Permit plain `http://` Vault addresses, in this config and in
    /// `sidekey.dev/vault-addr`. Off: the pod's login token and every secret
    /// would cross the network unencrypted. For development only.
    pub allow_http: bool,
    /// Whether a native-sidecar agent revokes its leases and token when the
    /// pod stops (SIGTERM, after the app containers have exited), unless
    /// `sidekey.dev/revoke-on-shutdown` says otherwise. Never in the legacy
    /// shape (its agent stops beside the app, which may still be draining)
    /// nor init-only (its credentials outlive the agent by design).
    pub revoke_on_shutdown: bool,
}

impl Default for VaultDefaults {
    fn default() -> Self {
        VaultDefaults {
            addr: "https://vault.vault.svc:8200".into(),
            allowed_addrs: Some(Vec::new()),
            role: None,
            auth_method: AuthMethod::Kubernetes,
            auth_mount: "kubernetes".into(),
            namespace: None,
            auth_namespace: None,
            audience: "sidekey".into(),
            token_expiration_seconds: 3600,
            ca_cert: None,
            allow_http: false,
            revoke_on_shutdown: true,
        }
    }
}

/// The placeholders `vault.role` may use.
pub const ROLE_PLACEHOLDERS: [&str; 2] = ["{namespace}", "{serviceAccount}"];

/// `role` with the pod's namespace and service account filled in.
pub fn expand_role(role: &str, namespace: &str, service_account: &str) -> String {
    role.replace("{namespace}", namespace).replace("{serviceAccount}", service_account)
}

impl VaultDefaults {
    /// Why `addr` may not be used over plain HTTP, if it is `http://` and
    /// `allowHttp` is off.
    pub fn http_problem(&self, addr: &str) -> Option<String> {
        (!self.allow_http && addr.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://"))).then(|| {
            "plain http:// is refused: the pod's Vault token and its secrets would cross the network unencrypted; use https:// (vault.allowHttp: true permits it for development)".to_owned()
        })
    }

    /// Whether a pod may send its credential to `addr`.
    pub fn addr_allowed(&self, addr: &str) -> bool {
        let norm = |s: &str| s.trim_end_matches('/').to_ascii_lowercase();
        norm(addr) == norm(&self.addr)
            || self.allowed_addrs.as_ref().is_none_or(|list| list.iter().any(|a| norm(a) == norm(addr)))
    }
}

/// AWS defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AwsDefaults {
    /// The region when neither the reference (ARN) nor the pod names one;
    /// absent: the agent's environment (`AWS_REGION`).
    pub region: Option<String>,
    /// An endpoint override (VPC endpoints, tests).
    pub endpoint: Option<String>,
}

impl InjectorConfig {
    /// The defaults for `sidekey inject` on your own files: as
    /// [`Default`], but any `sidekey.dev/vault-addr` is accepted and Go
    /// templates may write (issue certificates) anywhere but under `auth/`
    /// and `sys/`: the files are yours. In a cluster, an annotation must
    /// not choose where a pod's credential is sent, and the namespace
    /// policy names what templates may write.
    pub fn for_files() -> Self {
        let mut c = InjectorConfig::default();
        c.vault.allowed_addrs = None;
        c.policy.rules.push(PolicyRule {
            namespaces: vec!["*".into()],
            writes: Some(vec!["vault:*".into()]),
            ..PolicyRule::default()
        });
        c
    }

    /// Parses and validates a YAML configuration.
    ///
    /// # Errors
    /// [`ConfigError`] naming every unknown key or unusable value.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let docs = crate::yaml::parse_documents(text)?;
        let value = match docs.len() {
            0 => serde_json::Value::Object(serde_json::Map::new()),
            1 => docs.into_iter().next().unwrap_or_default(),
            n => {
                return Err(ConfigError::Invalid(vec![format!("expected one YAML document, found {n}")]));
            }
        };
        let config: InjectorConfig = serde_path_to_error::deserialize(value)
            .map_err(|e| ConfigError::Schema { path: e.path().to_string(), message: e.inner().to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work, reporting all of them.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] listing every problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.agent.image.trim().is_empty() {
            problems.push("agent.image: must not be empty".to_owned());
        }
        if self.agent.metrics_port == Some(0) {
            problems.push("agent.metricsPort: must be a port (1-65535), or absent for no metrics".to_owned());
        }
        if !["Always", "IfNotPresent", "Never"].contains(&self.agent.image_pull_policy.as_str()) {
            problems.push("agent.imagePullPolicy: must be Always, IfNotPresent or Never".to_owned());
        }
        if self.agent.uid == 0 {
            problems.push("agent.uid: must not be 0 (Pod Security restricted forbids root)".to_owned());
        }
        let r = &self.agent.resources;
        if r.requests.cpu > r.limits.cpu {
            problems.push("agent.resources: requests.cpu exceeds limits.cpu".to_owned());
        }
        if r.requests.memory > r.limits.memory {
            problems.push("agent.resources: requests.memory exceeds limits.memory".to_owned());
        }
        if self.agent.startup_timeout < Duration::from_secs(1) {
            problems.push("agent.startupTimeout: must be at least 1s".to_owned());
        }
        if let Some(p) = crate::contract::secrets_mount_problem(&self.defaults.mount_path) {
            problems.push(format!("defaults.mountPath: {p}"));
        }
        if let Some(p) = crate::contract::refresh_problem(self.defaults.refresh) {
            problems.push(format!("defaults.refresh: {p}"));
        }
        if let Some(p) = vault_addr_problem(&self.vault.addr).or_else(|| self.vault.http_problem(&self.vault.addr)) {
            problems.push(format!("vault.addr: {p}"));
        }
        for (i, a) in self.vault.allowed_addrs.iter().flatten().enumerate() {
            if let Some(p) = vault_addr_problem(a).or_else(|| self.vault.http_problem(a)) {
                problems.push(format!("vault.allowedAddrs[{i}]: {p}"));
            }
        }
        if let Some(pem) = &self.vault.ca_cert {
            if !pem.contains("-----BEGIN CERTIFICATE-----") || !pem.contains("-----END CERTIFICATE-----") {
                problems.push("vault.caCert: must hold PEM certificates (-----BEGIN CERTIFICATE-----)".to_owned());
            }
        }
        if let Some(role) = &self.vault.role {
            let rest = ROLE_PLACEHOLDERS.iter().fold(role.clone(), |r, p| r.replace(p, ""));
            if rest.contains(['{', '}']) {
                problems.push(format!(
                    "vault.role: the only placeholders are {} (found {role:?})",
                    ROLE_PLACEHOLDERS.join(" and ")
                ));
            }
        }
        if let Err(p) = crate::contract::check_path_like(&self.vault.auth_mount) {
            problems.push(format!("vault.authMount: {p}"));
        }
        if let Some(Err(p)) = self.vault.namespace.as_deref().map(crate::contract::check_path_like) {
            problems.push(format!("vault.namespace: {p}"));
        }
        if let Some(Err(p)) = self.vault.auth_namespace.as_deref().map(crate::contract::check_path_like) {
            problems.push(format!("vault.authNamespace: {p}"));
        }
        if self.vault.audience.is_empty() {
            problems.push("vault.audience: must not be empty".to_owned());
        }
        for (i, rule) in self.policy.rules.iter().enumerate() {
            if rule.namespaces.is_empty() {
                problems.push(format!("policy.rules[{i}].namespaces: must name at least one namespace"));
            }
            for b in rule.backends.iter().flatten() {
                if !["vault", "aws", "file"].contains(&b.as_str()) {
                    problems.push(format!("policy.rules[{i}].backends: unknown backend {b:?} (vault, aws, file)"));
                }
            }
            for w in rule.writes.iter().flatten().filter(|w| !w.starts_with("vault:")) {
                problems.push(format!(
                    "policy.rules[{i}].writes: {w:?} is not a vault: pattern (templates write only to Vault)"
                ));
            }
            for o in rule.overrides.iter().flatten().filter(|o| !LOGIN_OVERRIDES.contains(&o.as_str())) {
                problems.push(format!(
                    "policy.rules[{i}].overrides: unknown setting {o:?} ({})",
                    LOGIN_OVERRIDES.join(", ")
                ));
            }
        }
        if self.vault.token_expiration_seconds < 600 {
            problems.push("vault.tokenExpirationSeconds: Kubernetes requires at least 600".to_owned());
        }
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(problems)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(InjectorConfig::from_yaml("").unwrap(), InjectorConfig::default());
        assert_eq!(InjectorConfig::from_yaml("{}\n").unwrap(), InjectorConfig::default());
    }

    #[test]
    fn overrides_nested_values() {
        let c = InjectorConfig::from_yaml(
            "agent:\n  image: reg.example/agent@sha256:abc\nvault:\n  addr: https://vault.example:8200\n  allowedAddrs: [https://vault2.example:8200]\nbackends:\n  file: true\n",
        )
        .unwrap();
        assert_eq!(c.agent.image, "reg.example/agent@sha256:abc");
        assert!(c.backends.file && c.backends.vault);
        assert!(c.vault.addr_allowed("https://vault.example:8200/"));
        assert!(c.vault.addr_allowed("https://vault2.example:8200"));
        assert!(!c.vault.addr_allowed("https://attacker.example"));
    }

    #[test]
    fn refuses_plain_http_vault_unless_allowed() {
        let e = InjectorConfig::from_yaml(
            "vault:\n  addr: http://vault.vault.svc:8200\n  allowedAddrs: [\"http://other:8200\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("vault.addr: plain http:// is refused"), "{e}");
        assert!(e.contains("vault.allowedAddrs[0]: plain http:// is refused"), "{e}");
        let c = InjectorConfig::from_yaml("vault:\n  addr: http://127.0.0.1:8200\n  allowHttp: true\n").unwrap();
        assert!(c.vault.http_problem("http://127.0.0.1:8200").is_none());
        assert!(InjectorConfig::default().vault.http_problem("https://vault:8200").is_none());
    }

    #[test]
    fn vault_ca_cert_must_be_pem() {
        let e = InjectorConfig::from_yaml("vault:\n  caCert: not a certificate\n").unwrap_err().to_string();
        assert!(e.contains("vault.caCert: must hold PEM certificates"), "{e}");
        let pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
        let c = InjectorConfig::from_yaml(&format!(
            "vault:\n  caCert: |\n    {}\n",
            pem.trim_end().replace('\n', "\n    ")
        ))
        .unwrap();
        assert_eq!(c.vault.ca_cert.as_deref(), Some(pem));
    }

    #[test]
    fn rejects_unknown_keys_by_path() {
        let e = InjectorConfig::from_yaml("vault:\n  adress: https://x\n").unwrap_err().to_string();
        assert!(e.contains("vault") && e.contains("adress"), "{e}");
        let e = InjectorConfig::from_yaml("agnet: {}\n").unwrap_err().to_string();
        assert!(e.contains("agnet"), "{e}");
    }

    #[test]
    fn reports_every_invalid_value() {
        let e = InjectorConfig::from_yaml(
            "agent:\n  uid: 0\n  resources:\n    requests: {cpu: 1, memory: 1Gi}\n    limits: {cpu: 100m, memory: 32Mi}\nvault:\n  addr: vault:8200\n",
        )
        .unwrap_err()
        .to_string();
        for needle in ["agent.uid", "requests.cpu", "requests.memory", "vault.addr"] {
            assert!(e.contains(needle), "{needle} missing in {e}");
        }
    }

    #[test]
    fn globs_match_prefixes_and_middles() {
        assert!(glob_match("team-*", "team-a"));
        assert!(glob_match("vault:secret/data/team-a/*", "vault:secret/data/team-a/db#password"));
        assert!(!glob_match("vault:secret/data/team-a/*", "vault:secret/data/team-b/db"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "a-x-b-y-c"));
        assert!(!glob_match("a*b*c", "a-x-c"));
        assert!(glob_match("exact", "exact") && !glob_match("exact", "exact2"));
    }

    #[test]
    fn policy_rules_decide_by_namespace() {
        let c = InjectorConfig::from_yaml(
            "policy:\n  default: deny\n  rules:\n    - namespaces: [team-a]\n      backends: [vault]\n      references: [\"vault:secret/data/team-a/*\"]\n    - namespaces: [\"ops-*\"]\n",
        )
        .unwrap();
        let r = |s: &str| s.parse::<crate::reference::Reference>().unwrap();
        assert_eq!(c.policy.refusal("team-a", &r("vault:secret/data/team-a/db#pw")), None);
        assert!(
            c.policy.refusal("team-a", &r("vault:secret/data/team-b/db")).unwrap().contains("not allowed in namespace")
        );
        assert!(c.policy.refusal("team-a", &r("aws-sm:x")).unwrap().contains("aws backend"));
        assert_eq!(c.policy.refusal("ops-1", &r("aws-sm:x")), None);
        assert!(c.policy.refusal("other", &r("vault:a/b")).unwrap().contains("no secrets"));
        assert!(InjectorConfig::from_yaml("policy:\n  rules:\n    - namespaces: []\n      backends: [gcp]\n").is_err());
    }

    #[test]
    fn rejects_bad_quantities_and_durations() {
        assert!(InjectorConfig::from_yaml("defaults:\n  volumeSizeLimit: lots\n").is_err());
        assert!(InjectorConfig::from_yaml("defaults:\n  refresh: 5\n").is_err());
        assert!(InjectorConfig::from_yaml("defaults:\n  lifecycle: forever\n").is_err());
    }

    #[test]
    fn a_role_template_may_use_only_namespace_and_service_account() {
        let mut c = InjectorConfig::default();
        c.vault.role = Some("k8s-{namespace}-{serviceAccount}".into());
        assert!(c.validate().is_ok());
        c.vault.role = Some("k8s-{cluster}-{serviceAccount}".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("vault.role: the only placeholders are {namespace} and {serviceAccount}"), "{e}");
        assert_eq!(expand_role("k8s-{namespace}-{serviceAccount}", "shop", "orders"), "k8s-shop-orders");
    }
}
