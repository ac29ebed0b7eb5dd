//! The `sidekey.dev/` annotation contract, parsed into typed specs.
//!
//! Every annotation with the prefix is either understood or an error: a typo
//! (`sidekey.dev/secert-db`) must not silently leave a pod without its secret.
//! Parsing reports every bad annotation at once, each with its key and the
//! reason. The reference is `docs/annotations.md`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

pub use crate::contract::{
    EnvMode, Format, Lifecycle, OnChange, Signal, check_path_like, mount_path_problem, parse_file_mode,
    refresh_problem, secrets_mount_problem,
};
use crate::names::{dns_label_problem, file_name_problem};
use crate::quantity::Quantity;
use crate::reference::Reference;
use crate::{PREFIX, duration};

/// One bad input: which field and why. The field names an annotation key, a
/// container's env var or a pod field; the reason never contains a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `annotation sidekey.dev/secret-x`, `container app: env DB_PASSWORD`, …
    pub field: String,
    /// Why it is refused.
    pub reason: String,
}

impl Problem {
    /// A problem with the annotation `sidekey.dev/<key>`.
    pub fn annotation(key: &str, reason: impl Into<String>) -> Self {
        Problem { field: format!("annotation {PREFIX}{key}"), reason: reason.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// The `secret-<name>` family for one name.
#[derive(Debug, Clone, PartialEq)]
pub struct SecretAnnotation {
    /// `secret-<name>`.
    pub reference: Reference,
    /// `format-<name>`, or implied by `template-<name>`.
    pub format: Option<Format>,
    /// `template-<name>`.
    pub template: Option<String>,
    /// `file-mode-<name>`.
    pub file_mode: Option<u32>,
    /// `delims-<name>`: a Go template's delimiters other than `{{ }}`.
    pub delims: Option<crate::contract::Delims>,
    /// `missing-key-<name>: error`: a Go template fails on a missing field.
    pub missing_key_error: bool,
    /// A Go template's `secret`/`pkiCert` calls (found once, when the
    /// annotations are read), for the policy.
    pub calls: Vec<crate::gotemplate::SecretCall>,
}

/// Agent resource overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentResources {
    /// `agent-cpu-request`.
    pub cpu_request: Option<Quantity>,
    /// `agent-cpu-limit`.
    pub cpu_limit: Option<Quantity>,
    /// `agent-memory-request`.
    pub memory_request: Option<Quantity>,
    /// `agent-memory-limit`.
    pub memory_limit: Option<Quantity>,
}

/// Everything the annotations of one pod (template) say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodAnnotations {
    /// `inject: "true"`.
    pub inject: bool,
    /// `status` is present: injected already.
    pub injected: bool,
    /// `secret-<name>` and its companions, by name.
    pub secrets: BTreeMap<String, SecretAnnotation>,
    /// `map-<k8s-secret>`, by Kubernetes Secret name.
    pub maps: BTreeMap<String, Reference>,
    /// `mount-path`.
    pub mount_path: Option<String>,
    /// `containers`.
    pub containers: Option<Vec<String>>,
    /// `env`.
    pub env: Option<EnvMode>,
    /// `refresh`.
    pub refresh: Option<Duration>,
    /// `revoke-on-shutdown`.
    pub revoke_on_shutdown: Option<bool>,
    /// `on-change`.
    pub on_change: Option<OnChange>,
    /// `lifecycle`.
    pub lifecycle: Option<Lifecycle>,
    /// `vault-addr`.
    pub vault_addr: Option<String>,
    /// `vault-role`.
    pub vault_role: Option<String>,
    /// `vault-auth-mount`.
    pub vault_auth_mount: Option<String>,
    /// `cert-<name>`: certificates from the PKI engine.
    pub certs: BTreeMap<String, crate::cert::CertRequest>,
    /// `vault-auth-namespace`: where the agent logs in.
    pub vault_auth_namespace: Option<String>,
    /// `vault-auth-method`: how the agent logs in.
    pub vault_auth_method: Option<crate::contract::AuthMethod>,
    /// `vault-namespace`.
    pub vault_namespace: Option<String>,
    /// `aws-region`.
    pub aws_region: Option<String>,
    /// `aws-role-arn`.
    pub aws_role_arn: Option<String>,
    /// `agent-*`.
    pub resources: AgentResources,
    /// `command-<container>`: the command to wrap in `exec` mode when the
    /// container spec has none.
    pub commands: BTreeMap<String, Vec<String>>,
}

fn parse_command(s: &str) -> Result<Vec<String>, String> {
    let cmd: Vec<String> = if s.trim_start().starts_with('[') {
        serde_json::from_str(s)
            .map_err(|_| "must be a JSON array of strings or words separated by spaces".to_owned())?
    } else {
        s.split_whitespace().map(str::to_owned).collect()
    };
    if cmd.is_empty() || cmd[0].is_empty() {
        return Err("must name a command".into());
    }
    Ok(cmd)
}

fn check_role(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 128 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b)) {
        return Err("must be 1 to 128 of A-Z a-z 0-9 - _ . @".into());
    }
    Ok(s.to_owned())
}

fn check_region(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() < 3
        || !parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        || !parts.last().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("must be an AWS region such as us-east-1".into());
    }
    Ok(s.to_owned())
}

fn check_role_arn(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", partition, "iam", "", account, resource]
            if partition.starts_with("aws")
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.starts_with("role/")
                && resource.len() > 5 =>
        {
            Ok(s.to_owned())
        }
        _ => Err("must be an IAM role ARN such as arn:aws:iam::123456789012:role/name".into()),
    }
}

/// The most `sidekey.dev/` annotations one pod may carry (a pod with a
/// hundred secrets has about 200).
pub const MAX_ANNOTATIONS: usize = 1000;

/// The most bytes of annotations (keys and values together) a Kubernetes
/// object may carry: the API server refuses more (`TotalAnnotationSizeLimitB`
/// in apimachinery's validation), but only after mutating admission, so the
/// webhook checks it first instead of parsing megabytes of templates for a
/// pod that cannot be stored.
pub const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

/// Why `annotations` are too large for Kubernetes, if they are.
pub fn annotation_bytes_problem(annotations: &Map<String, Value>) -> Option<Problem> {
    let total: usize = annotations.iter().map(|(k, v)| k.len() + v.as_str().map_or(0, str::len)).sum();
    (total > MAX_ANNOTATION_BYTES).then(|| Problem {
        field: "metadata.annotations".into(),
        reason: format!(
            "{total} bytes of annotations; Kubernetes accepts at most {MAX_ANNOTATION_BYTES} (the API server would refuse this pod)"
        ),
    })
}

/// The annotations sidekey reads, each declared once. Their meaning is in
/// `docs/annotations.md`; a key is `sidekey.dev/` and its [`Key::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// `inject`: the pod opts in.
    Inject,
    /// `status`: written by the injector once the pod is injected.
    Status,
    /// `mount-path`.
    MountPath,
    /// `containers`.
    Containers,
    /// `env`.
    Env,
    /// `refresh`.
    Refresh,
    /// `revoke-on-shutdown`.
    RevokeOnShutdown,
    /// `on-change`.
    OnChange,
    /// `lifecycle`.
    Lifecycle,
    /// `vault-addr`.
    VaultAddr,
    /// `vault-role`.
    VaultRole,
    /// `vault-auth-method`.
    VaultAuthMethod,
    /// `vault-auth-mount`.
    VaultAuthMount,
    /// `vault-namespace`.
    VaultNamespace,
    /// `vault-auth-namespace`.
    VaultAuthNamespace,
    /// `aws-region`.
    AwsRegion,
    /// `aws-role-arn`.
    AwsRoleArn,
    /// `agent-cpu-request`.
    AgentCpuRequest,
    /// `agent-cpu-limit`.
    AgentCpuLimit,
    /// `agent-memory-request`.
    AgentMemoryRequest,
    /// `agent-memory-limit`.
    AgentMemoryLimit,
}

impl Key {
    /// Every key, in the order the docs list them.
    pub const ALL: [Key; 21] = [
        Key::Inject,
        Key::Status,
        Key::MountPath,
        Key::Containers,
        Key::Env,
        Key::Refresh,
        Key::RevokeOnShutdown,
        Key::OnChange,
        Key::Lifecycle,
        Key::VaultAddr,
        Key::VaultRole,
        Key::VaultAuthMethod,
        Key::VaultAuthMount,
        Key::VaultNamespace,
        Key::VaultAuthNamespace,
        Key::AwsRegion,
        Key::AwsRoleArn,
        Key::AgentCpuRequest,
        Key::AgentCpuLimit,
        Key::AgentMemoryRequest,
        Key::AgentMemoryLimit,
    ];

    /// The key without the prefix.
    pub const fn name(self) -> &'static str {
        match self {
            Key::Inject => "inject",
            Key::Status => "status",
            Key::MountPath => "mount-path",
            Key::Containers => "containers",
            Key::Env => "env",
            Key::Refresh => "refresh",
            Key::RevokeOnShutdown => "revoke-on-shutdown",
            Key::OnChange => "on-change",
            Key::Lifecycle => "lifecycle",
            Key::VaultAddr => "vault-addr",
            Key::VaultRole => "vault-role",
            Key::VaultAuthMethod => "vault-auth-method",
            Key::VaultAuthMount => "vault-auth-mount",
            Key::VaultNamespace => "vault-namespace",
            Key::VaultAuthNamespace => "vault-auth-namespace",
            Key::AwsRegion => "aws-region",
            Key::AwsRoleArn => "aws-role-arn",
            Key::AgentCpuRequest => "agent-cpu-request",
            Key::AgentCpuLimit => "agent-cpu-limit",
            Key::AgentMemoryRequest => "agent-memory-request",
            Key::AgentMemoryLimit => "agent-memory-limit",
        }
    }

    /// The whole key, `sidekey.dev/<name>`.
    pub fn key(self) -> String {
        format!("{PREFIX}{}", self.name())
    }

    fn lookup(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// The annotations named after a file, a Kubernetes Secret or a container:
/// `secret-<name>`, `map-<secret>`, ….
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    /// `secret-<name>`: a file and its reference.
    Secret,
    /// `map-<secret>`: where a Kubernetes Secret's keys live now.
    Map,
    /// `cert-<name>`: a certificate from the PKI engine, in directory `<name>`.
    Cert,
    /// `format-<name>`.
    Format,
    /// `template-<name>`.
    Template,
    /// `file-mode-<name>`.
    FileMode,
    /// `delims-<name>`.
    Delims,
    /// `missing-key-<name>`.
    MissingKey,
    /// `command-<container>`.
    Command,
}

impl Named {
    /// Every named kind, in the order the docs list them.
    pub const ALL: [Named; 9] = [
        Named::Secret,
        Named::Map,
        Named::Cert,
        Named::Format,
        Named::Template,
        Named::FileMode,
        Named::Delims,
        Named::MissingKey,
        Named::Command,
    ];

    /// The part of the key before the name.
    pub const fn prefix(self) -> &'static str {
        match self {
            Named::Secret => "secret-",
            Named::Map => "map-",
            Named::Cert => "cert-",
            Named::Format => "format-",
            Named::Template => "template-",
            Named::FileMode => "file-mode-",
            Named::Delims => "delims-",
            Named::MissingKey => "missing-key-",
            Named::Command => "command-",
        }
    }

    /// What the name names, in messages.
    const fn what(self) -> &'static str {
        match self {
            Named::Map => "Kubernetes Secret",
            Named::Command => "container",
            _ => "secret",
        }
    }

    /// The key (without the prefix) for `name`: `file-mode-tls`.
    pub fn name(self, name: &str) -> String {
        format!("{}{name}", self.prefix())
    }

    fn lookup(key: &str) -> Option<(Named, &str)> {
        Named::ALL.into_iter().find_map(|n| key.strip_prefix(n.prefix()).map(|name| (n, name)))
    }

    fn placeholder(self) -> String {
        let name = match self {
            Named::Map => "<secret>",
            Named::Command => "<container>",
            _ => "<name>",
        };
        format!("{}{name}", self.prefix())
    }
}

/// Every key, for the "unknown annotation" hint.
fn known_keys() -> String {
    let plain = Key::ALL.iter().map(|k| k.name().to_owned());
    plain.chain(Named::ALL.iter().map(|n| n.placeholder())).collect::<Vec<_>>().join(", ")
}

/// The annotation values of a pod template as strings, or problems for
/// values that are not strings (Kubernetes requires strings; YAML turns an
/// unquoted `true` into a boolean).
fn string_values(annotations: &Map<String, Value>, problems: &mut Vec<Problem>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in annotations {
        let Some(key) = k.strip_prefix(PREFIX) else { continue };
        match v {
            Value::String(s) => {
                out.insert(key.to_owned(), s.clone());
            }
            _ => {
                problems.push(Problem::annotation(key, "the value must be a string (quote it in YAML, e.g. \"true\")"))
            }
        }
    }
    out
}

/// Whether the annotations opt the pod in and it was not injected yet. Cheap:
/// the webhook calls it for every pod.
pub fn wants_injection(annotations: Option<&Map<String, Value>>) -> bool {
    annotations.is_some_and(|a| {
        a.get(&Key::Inject.key()).and_then(Value::as_str) == Some("true") && !a.contains_key(&Key::Status.key())
    })
}

/// Parses the `sidekey.dev/` annotations of a pod template.
///
/// Pods that do not opt in (or are injected already) get their `inject` and
/// `injected` flags and nothing else is checked: only an opted-in pod is
/// held to the contract.
///
/// # Errors
/// Every problem found, each naming its annotation.
pub fn parse(annotations: Option<&Map<String, Value>>) -> Result<PodAnnotations, Vec<Problem>> {
    parse_checked(annotations, &crate::templates::CheckedTemplates::new())
}

/// [`parse`], taking the calls of Go templates that were checked earlier
/// in the same review (the vault-k8s translation) from `checked` instead
/// of parsing them again.
///
/// # Errors
/// As [`parse`].
pub fn parse_checked(
    annotations: Option<&Map<String, Value>>,
    checked: &crate::templates::CheckedTemplates,
) -> Result<PodAnnotations, Vec<Problem>> {
    let mut out = PodAnnotations::default();
    let Some(annotations) = annotations else { return Ok(out) };
    out.injected = annotations.contains_key(&Key::Status.key());
    match annotations.get(&Key::Inject.key()) {
        None => return Ok(out),
        Some(Value::String(s)) if s == "true" => out.inject = true,
        Some(Value::String(s)) if s == "false" || s.is_empty() => return Ok(out),
        Some(_) => {
            return Err(vec![Problem::annotation(Key::Inject.name(), "must be \"true\" or \"false\"")]);
        }
    }
    if out.injected {
        return Ok(out);
    }
    // Mutating admission runs before object validation: the apiserver's
    // 256 KiB annotation limit does not protect this parser. No real pod has
    // this many of ours; refuse at once instead of judging each.
    let ours = annotations.keys().filter(|k| k.starts_with(PREFIX)).count();
    if ours > MAX_ANNOTATIONS {
        return Err(vec![Problem {
            field: format!("metadata.annotations {PREFIX}*"),
            reason: format!("{ours} {PREFIX} annotations; at most {MAX_ANNOTATIONS} are accepted"),
        }]);
    }
    if let Some(p) = annotation_bytes_problem(annotations) {
        return Err(vec![p]);
    }
    let mut problems = Vec::new();
    let values = string_values(annotations, &mut problems);
    let mut companions = Companions::default();
    for (key, value) in &values {
        let result = match (Key::lookup(key), Named::lookup(key)) {
            (Some(k), _) => set_plain(&mut out, k, value),
            (None, Some((n, name))) => set_named(&mut out, &mut companions, n, name, value),
            (None, None) => Err(format!("unknown annotation (known: {})", known_keys())),
        };
        if let Err(reason) = result {
            problems.push(Problem::annotation(key, reason));
        }
    }
    companions.join(&mut out, &values, checked, &mut problems);
    let r = &out.resources;
    for (req_key, lim_key, req, lim) in [
        (Key::AgentCpuRequest, Key::AgentCpuLimit, &r.cpu_request, &r.cpu_limit),
        (Key::AgentMemoryRequest, Key::AgentMemoryLimit, &r.memory_request, &r.memory_limit),
    ] {
        if let (Some(req), Some(lim)) = (req, lim)
            && req > lim
        {
            problems.push(Problem::annotation(req_key.name(), format!("{req} exceeds {} {lim}", lim_key.key())));
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

/// Sets what a plain annotation says.
fn set_plain(out: &mut PodAnnotations, key: Key, value: &str) -> Result<(), String> {
    let some = |v: Result<String, String>| v.map(Some);
    match key {
        Key::Inject | Key::Status => {}
        Key::MountPath => match secrets_mount_problem(value) {
            None => out.mount_path = Some(value.to_owned()),
            Some(p) => return Err(p),
        },
        Key::Containers => {
            let list: Vec<String> = value.split(',').map(|s| s.trim().to_owned()).collect();
            if let Some(p) = list.iter().find_map(|c| dns_label_problem(c)) {
                return Err(format!("must be a comma-separated list of container names; a name {p}"));
            }
            out.containers = Some(list);
        }
        Key::Env => {
            out.env = Some(match value {
                "file" => EnvMode::File,
                "exec" => EnvMode::Exec,
                "remove" => EnvMode::Remove,
                _ => return Err("must be file, exec or remove".into()),
            });
        }
        Key::RevokeOnShutdown => {
            out.revoke_on_shutdown = Some(match value {
                "true" => true,
                "false" => false,
                _ => return Err("must be \"true\" or \"false\"".into()),
            });
        }
        Key::Refresh => {
            let d = duration::parse(value).map_err(|e| e.to_string())?;
            if let Some(p) = refresh_problem(d) {
                return Err(p);
            }
            out.refresh = Some(d);
        }
        Key::OnChange => out.on_change = Some(value.parse()?),
        Key::Lifecycle => {
            out.lifecycle = Some(match value {
                "sidecar" => Lifecycle::Sidecar,
                "init-only" => Lifecycle::InitOnly,
                "legacy" => Lifecycle::Legacy,
                _ => return Err("must be sidecar, init-only or legacy".into()),
            });
        }
        Key::VaultAddr => match crate::contract::vault_addr_problem(value) {
            None => out.vault_addr = Some(value.trim_end_matches('/').to_owned()),
            Some(p) => return Err(p),
        },
        Key::VaultRole => out.vault_role = some(check_role(value))?,
        Key::VaultAuthMethod => out.vault_auth_method = Some(value.parse()?),
        Key::VaultAuthMount => out.vault_auth_mount = some(check_path_like(value))?,
        Key::VaultNamespace => out.vault_namespace = some(check_path_like(value))?,
        Key::VaultAuthNamespace => out.vault_auth_namespace = some(check_path_like(value))?,
        Key::AwsRegion => out.aws_region = some(check_region(value))?,
        Key::AwsRoleArn => out.aws_role_arn = some(check_role_arn(value))?,
        Key::AgentCpuRequest | Key::AgentCpuLimit | Key::AgentMemoryRequest | Key::AgentMemoryLimit => {
            let q = value.parse::<Quantity>().map_err(|e| e.to_string())?;
            let r = &mut out.resources;
            let slot = match key {
                Key::AgentCpuRequest => &mut r.cpu_request,
                Key::AgentCpuLimit => &mut r.cpu_limit,
                Key::AgentMemoryRequest => &mut r.memory_request,
                _ => &mut r.memory_limit,
            };
            *slot = Some(q);
        }
    }
    Ok(())
}

/// The annotations that only mean something next to a `secret-<name>`,
/// collected first and joined to their secret afterwards.
#[derive(Default)]
struct Companions {
    formats: BTreeMap<String, Format>,
    templates: BTreeMap<String, String>,
    modes: BTreeMap<String, u32>,
    delims: BTreeMap<String, crate::contract::Delims>,
    missing_keys: BTreeMap<String, bool>,
}

/// Sets what a named annotation says (companions wait in `companions`).
fn set_named(
    out: &mut PodAnnotations,
    companions: &mut Companions,
    kind: Named,
    name: &str,
    value: &str,
) -> Result<(), String> {
    let problem = match kind {
        Named::Map | Named::Command => dns_label_problem(name),
        _ => file_name_problem(name),
    };
    if let Some(p) = problem {
        return Err(format!("the {} name {p}", kind.what()));
    }
    let name = name.to_owned();
    match kind {
        Named::Secret => {
            let reference = value.parse::<Reference>().map_err(|e| e.to_string())?;
            out.secrets.insert(
                name,
                SecretAnnotation {
                    reference,
                    format: None,
                    template: None,
                    file_mode: None,
                    delims: None,
                    missing_key_error: false,
                    calls: Vec::new(),
                },
            );
        }
        Named::Cert => {
            out.certs.insert(name, value.parse::<crate::cert::CertRequest>()?);
        }
        Named::Map => {
            let r = value.parse::<Reference>().map_err(|e| e.to_string())?;
            if r.key().is_some() {
                return Err("must not have a #key: the key of each secretKeyRef is appended".into());
            }
            out.maps.insert(name, r);
        }
        Named::Format => {
            let f = match value {
                "raw" => Format::Raw,
                "json" => Format::Json,
                "dotenv" => Format::Dotenv,
                "yaml" => Format::Yaml,
                "template" => Format::Template,
                "go-template" => Format::GoTemplate,
                _ => return Err("must be raw, json, dotenv, yaml, template or go-template".into()),
            };
            companions.formats.insert(name, f);
        }
        Named::Template => {
            if value.trim().is_empty() {
                return Err("the template is empty".into());
            }
            companions.templates.insert(name, value.to_owned());
        }
        Named::FileMode => {
            companions.modes.insert(name, parse_file_mode(value)?);
        }
        Named::Delims => {
            companions.delims.insert(name, value.parse()?);
        }
        Named::MissingKey => {
            let error = match value {
                "error" => true,
                "no-value" => false,
                _ => return Err("must be error or no-value".into()),
            };
            companions.missing_keys.insert(name, error);
        }
        Named::Command => {
            out.commands.insert(name, parse_command(value)?);
        }
    }
    Ok(())
}

impl Companions {
    /// Joins each companion to its secret; a companion without its secret,
    /// or a format and template that disagree, is a problem.
    fn join(
        mut self,
        out: &mut PodAnnotations,
        values: &BTreeMap<String, String>,
        checked: &crate::templates::CheckedTemplates,
        problems: &mut Vec<Problem>,
    ) {
        // A companion without its secret is a typo waiting to bite.
        let orphans = [
            (Named::Format, self.formats.keys().collect::<Vec<_>>()),
            (Named::Template, self.templates.keys().collect()),
            (Named::FileMode, self.modes.keys().collect()),
            (Named::Delims, self.delims.keys().collect()),
            (Named::MissingKey, self.missing_keys.keys().collect()),
        ];
        for (kind, names) in orphans {
            for name in names.into_iter().filter(|n| !values.contains_key(&Named::Secret.name(n))) {
                problems.push(Problem::annotation(
                    &kind.name(name),
                    format!("there is no {PREFIX}{} annotation", Named::Secret.name(name)),
                ));
            }
        }
        for (name, s) in &mut out.secrets {
            s.template = self.templates.remove(name);
            s.file_mode = self.modes.remove(name);
            s.delims = self.delims.remove(name);
            let missing_key = self.missing_keys.remove(name);
            s.missing_key_error = missing_key == Some(true);
            s.format = match (self.formats.remove(name), &s.template) {
                (None, Some(_)) => Some(Format::Template),
                (Some(f @ (Format::Template | Format::GoTemplate)), None) => {
                    problems.push(Problem::annotation(
                        &Named::Format.name(name),
                        format!("format {} needs a {PREFIX}{} annotation", f.name(), Named::Template.name(name)),
                    ));
                    None
                }
                (Some(f), Some(_)) if !matches!(f, Format::Template | Format::GoTemplate) => {
                    problems.push(Problem::annotation(
                        &Named::Template.name(name),
                        format!(
                            "a template is only used with format template or go-template, but {PREFIX}{} is {}",
                            Named::Format.name(name),
                            f.name()
                        ),
                    ));
                    None
                }
                (f, _) => f,
            };
            for (kind, set) in [(Named::Delims, s.delims.is_some()), (Named::MissingKey, missing_key.is_some())] {
                if set && s.format != Some(Format::GoTemplate) {
                    problems.push(Problem::annotation(
                        &kind.name(name),
                        format!("only used with {PREFIX}{}: go-template", Named::Format.name(name)),
                    ));
                }
            }
            if s.format == Some(Format::GoTemplate) && !matches!(s.reference, Reference::Vault { .. }) {
                problems.push(Problem::annotation(
                    &Named::Format.name(name),
                    "a go-template reads Vault paths: the secret must be a vault: reference",
                ));
            }
            if s.format == Some(Format::GoTemplate)
                && let Some(t) = &s.template
            {
                match checked.get(name).filter(|c| c.is_of(t, s.delims.as_ref())) {
                    Some(c) => s.calls = c.calls.clone(),
                    None => match crate::templates::GoTemplate::parse(t, s.delims.as_ref()) {
                        Ok(go) => s.calls = go.calls().to_vec(),
                        Err(e) => problems.push(Problem::annotation(&Named::Template.name(name), e.to_string())),
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_json(v: Value) -> Result<PodAnnotations, Vec<Problem>> {
        parse(v.as_object())
    }

    fn keys(problems: &[Problem]) -> Vec<String> {
        problems.iter().map(|p| p.field.clone()).collect()
    }

    #[test]
    fn vault_auth_mount_and_namespace_follow_one_strict_path_grammar() {
        for bad in [
            "..\\sys\\raw",
            "kubernetes\\..\\x",
            "a/../b",
            "./a",
            "a//b",
            "/a",
            "a/",
            "a%2fb",
            "a?x",
            "a#b",
            ".hidden",
            "",
        ] {
            let e = parse_json(json!({"sidekey.dev/inject": "true", "sidekey.dev/vault-auth-mount": bad,
                "sidekey.dev/vault-namespace": bad}))
            .unwrap_err();
            assert_eq!(
                keys(&e),
                ["annotation sidekey.dev/vault-auth-mount", "annotation sidekey.dev/vault-namespace"],
                "{bad:?}"
            );
        }
        let long = "a".repeat(257);
        assert!(parse_json(json!({"sidekey.dev/inject": "true", "sidekey.dev/vault-auth-mount": long})).is_err());
        let a =
            parse_json(json!({"sidekey.dev/inject": "true", "sidekey.dev/vault-auth-mount": "team-a/k8s.cluster_1",
            "sidekey.dev/vault-namespace": "admin/team-a"}))
            .unwrap();
        assert_eq!(a.vault_auth_mount.as_deref(), Some("team-a/k8s.cluster_1"));
    }

    #[test]
    fn too_many_of_our_annotations_are_refused_at_once() {
        let mut m = serde_json::Map::new();
        m.insert("sidekey.dev/inject".into(), json!("true"));
        for i in 0..MAX_ANNOTATIONS {
            m.insert(format!("sidekey.dev/bogus-{i}"), json!("x"));
        }
        let e = parse_json(Value::Object(m)).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].to_string().contains("at most 1000"), "{}", e[0]);
    }

    #[test]
    fn not_opted_in_is_not_checked() {
        let a = parse_json(json!({"sidekey.dev/inject": "false", "sidekey.dev/secret-../x": "gcp:x"})).unwrap();
        assert!(!a.inject);
        assert!(!parse_json(json!({"other": "x"})).unwrap().inject);
    }

    #[test]
    fn injected_pods_are_left_alone() {
        let a = parse_json(
            json!({"sidekey.dev/inject": "true", "sidekey.dev/status": "injected", "sidekey.dev/bogus": "1"}),
        )
        .unwrap();
        assert!(a.inject && a.injected);
    }

    #[test]
    fn parses_the_whole_contract() {
        let a = parse_json(json!({
            "sidekey.dev/inject": "true",
            "sidekey.dev/secret-db": "vault:database/creds/app",
            "sidekey.dev/secret-url": "vault:database/creds/app",
            "sidekey.dev/template-url": "postgres://{{ username }}:{{ password }}@db",
            "sidekey.dev/file-mode-db": "0400",
            "sidekey.dev/format-db": "json",
            "sidekey.dev/map-app-db": "aws-sm:prod/db",
            "sidekey.dev/mount-path": "/var/run/secrets/app",
            "sidekey.dev/containers": "a, b",
            "sidekey.dev/env": "exec",
            "sidekey.dev/refresh": "2m",
            "sidekey.dev/on-change": "signal:hup",
            "sidekey.dev/lifecycle": "legacy",
            "sidekey.dev/vault-addr": "https://vault:8200/",
            "sidekey.dev/vault-role": "app",
            "sidekey.dev/vault-auth-mount": "k8s/eu",
            "sidekey.dev/vault-namespace": "team-a",
            "sidekey.dev/aws-region": "eu-west-1",
            "sidekey.dev/aws-role-arn": "arn:aws:iam::123456789012:role/app",
            "sidekey.dev/agent-cpu-request": "10m",
            "sidekey.dev/agent-cpu-limit": "100m",
            "sidekey.dev/agent-memory-request": "8Mi",
            "sidekey.dev/agent-memory-limit": "32Mi",
            "sidekey.dev/command-a": "[\"/app\", \"serve\"]",
        }))
        .unwrap();
        assert_eq!(a.secrets["url"].format, Some(Format::Template));
        assert_eq!(a.secrets["db"].format, Some(Format::Json));
        assert_eq!(a.secrets["db"].file_mode, Some(0o400));
        assert_eq!(a.containers, Some(vec!["a".into(), "b".into()]));
        assert_eq!(a.on_change, Some(OnChange::Signal(Signal::Hup)));
        assert_eq!(a.vault_addr.as_deref(), Some("https://vault:8200"));
        assert_eq!(a.commands["a"], vec!["/app", "serve"]);
        assert_eq!(a.refresh, Some(Duration::from_secs(120)));
        assert_eq!(a.lifecycle, Some(Lifecycle::Legacy));
        assert_eq!(a.env, Some(EnvMode::Exec));
    }

    #[test]
    fn reports_every_bad_annotation_by_key() {
        let e = parse_json(json!({
            "sidekey.dev/inject": "true",
            "sidekey.dev/secret-../../etc/x": "vault:a/b",
            "sidekey.dev/secret-certs/tls-key": "vault:a/b",
            "sidekey.dev/secret-stripe": "gcp:projects/x",
            "sidekey.dev/file-mode-stripe": "999",
            "sidekey.dev/secert-typo": "vault:a/b",
            "sidekey.dev/env": "files",
            "sidekey.dev/refresh": "5",
            "sidekey.dev/format-nothing": "raw",
            "sidekey.dev/on-change": "http://10.0.0.1:80/x",
            "sidekey.dev/map-db": "vault:a/b#k",
        }))
        .unwrap_err();
        let k = keys(&e);
        for expected in [
            "annotation sidekey.dev/secret-../../etc/x",
            "annotation sidekey.dev/secret-certs/tls-key",
            "annotation sidekey.dev/secret-stripe",
            "annotation sidekey.dev/file-mode-stripe",
            "annotation sidekey.dev/secert-typo",
            "annotation sidekey.dev/env",
            "annotation sidekey.dev/refresh",
            "annotation sidekey.dev/format-nothing",
            "annotation sidekey.dev/on-change",
            "annotation sidekey.dev/map-db",
        ] {
            assert!(k.contains(&expected.to_owned()), "{expected} not in {k:?}");
        }
    }

    #[test]
    fn file_modes_must_be_octal_read_only() {
        assert_eq!(parse_file_mode("0440"), Ok(0o440));
        assert_eq!(parse_file_mode("400"), Ok(0o400));
        for bad in ["999", "0640", "0777", "", "0x1", "0000", "04440"] {
            assert!(parse_file_mode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn non_string_values_are_refused() {
        let e = parse_json(json!({"sidekey.dev/inject": true})).unwrap_err();
        assert_eq!(keys(&e), vec!["annotation sidekey.dev/inject"]);
        let e = parse_json(json!({"sidekey.dev/inject": "true", "sidekey.dev/refresh": 5})).unwrap_err();
        assert_eq!(keys(&e), vec!["annotation sidekey.dev/refresh"]);
    }

    #[test]
    fn request_above_limit_is_refused() {
        let e = parse_json(json!({
            "sidekey.dev/inject": "true",
            "sidekey.dev/agent-memory-request": "64Mi",
            "sidekey.dev/agent-memory-limit": "32Mi",
        }))
        .unwrap_err();
        assert_eq!(keys(&e), vec!["annotation sidekey.dev/agent-memory-request"]);
    }

    #[test]
    fn mount_paths_are_absolute_and_normalized() {
        assert_eq!(mount_path_problem("/run/secrets/x"), None);
        for taken in ["/sidekey", "/sidekey/bin", "/sidekey/state/x", "/var", "/var/run/secrets/sidekey.dev"] {
            assert!(secrets_mount_problem(taken).is_some_and(|p| p.contains("overlaps")), "{taken}");
        }
        assert_eq!(secrets_mount_problem("/sidekey2"), None);
        assert_eq!(secrets_mount_problem("/run/secrets/sidekey"), None);
        for bad in ["run/x", "/", "/a/../b", "/a//b", "/a/", "/a b", "/a:b"] {
            assert!(mount_path_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn on_change_http_must_stay_in_the_pod() {
        assert!("http://127.0.0.1:8081/-/reload".parse::<OnChange>().is_ok());
        assert!("http://localhost:9000/".parse::<OnChange>().is_ok());
        assert!("http://vault.example:8200/x".parse::<OnChange>().is_err());
        assert!("https://127.0.0.1:1/x".parse::<OnChange>().is_err());
        assert!("signal:SIGKILL".parse::<OnChange>().is_err());
    }
}
