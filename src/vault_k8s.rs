//! Compatibility with the Vault Agent injector (vault-k8s): its
//! `vault.hashicorp.com/*` pod annotations translated into sidekey's own
//! `sidekey.dev/*` annotations, which then go through the one annotation
//! contract ([`crate::annotations`]) like any other pod.
//!
//! Each secret becomes a file rendered by its Go template
//! (`format: go-template`): the template of `agent-inject-template-<name>`,
//! or the default Vault Agent uses (`agent-inject-default-template`: `map`
//! or `json`), byte for byte. What sidekey does its own way (the agent's
//! user, cache, image, log settings) is accepted with a note; what cannot
//! be translated (a ConfigMap of agent config, JSON patches, the token in
//! the app's volume, skipping TLS verification) is refused naming the
//! annotation; an unknown `vault.hashicorp.com/` annotation is refused too.
//! Nothing is ignored silently.
//!
//! Nothing else in the core depends on this module: the injector calls
//! [`translate`] and [`mutate`] when its compatibility setting is on, and
//! `sidekey migrate --from vault-k8s` the same two before it writes the
//! result into manifests.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::PREFIX as SIDEKEY;
use crate::annotations::{Key, Named, Problem};
use crate::config::InjectorConfig;
use crate::contract::Delims;
use crate::mutate::Outcome;
use crate::names::file_name_problem;
use crate::patch::Patch;
use crate::templates::{CheckedTemplates, checked_template};

pub mod migrate;

/// The prefix of vault-k8s's annotations.
pub const PREFIX: &str = "vault.hashicorp.com/";

/// The prefixes the Vault Agent injector's annotations are written with:
/// vault-k8s's, and the OpenBao injector's (`openbao.openbao.org/`, as
/// openbao-k8s reads them; `openbao.org/`, as OpenBao workloads write
/// them). The same vocabulary follows each; a pod uses one of them, the
/// first in this order that has `agent-inject`.
pub const PREFIXES: [&str; 3] = [PREFIX, "openbao.openbao.org/", "openbao.org/"];

/// The prefix of the injector annotations of a pod template: the first of
/// [`PREFIXES`] with an `agent-inject` annotation.
pub fn prefix_of(annotations: Option<&Map<String, Value>>) -> Option<&'static str> {
    let a = annotations?;
    PREFIXES.into_iter().find(|p| a.contains_key(&format!("{p}agent-inject")))
}

/// The template Vault Agent renders a secret with when none is given
/// (`agent-inject-default-template: map`, the default).
pub fn default_map_template(path: &str) -> String {
    format!(
        "{{{{ with secret \"{path}\" }}}}{{{{ range $k, $v := .Data }}}}{{{{ $k }}}}: {{{{ $v }}}}\n{{{{ end }}}}{{{{ end }}}}"
    )
}

/// The template for `agent-inject-default-template: json`.
pub fn default_json_template(path: &str) -> String {
    format!("{{{{ with secret \"{path}\" }}}}{{{{ .Data | toJSON }}}}\n{{{{ end }}}}")
}

/// The annotations of one pod, translated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Translation {
    /// `sidekey.dev/*` annotations (full keys) and their values.
    pub annotations: BTreeMap<String, String>,
    /// Annotations accepted but not needed (sidekey does that its own
    /// way), each with why: said to the user as warnings.
    pub notes: Vec<String>,
    /// For each `sidekey.dev/*` key, the `vault.hashicorp.com/*` key it
    /// came from, so that a problem found later names what the user wrote.
    pub origins: BTreeMap<String, String>,
    /// The Go templates as checked here, by file name: the annotation
    /// parser takes their calls instead of parsing them again.
    pub templates: CheckedTemplates,
    /// The prefix the pod's injector annotations were written with (one of
    /// [`PREFIXES`]); its `agent-inject-status` marks the pod injected.
    pub prefix: &'static str,
}

impl Translation {
    /// `problem`, naming the vault-k8s annotation the sidekey one came from.
    pub fn name_origin(&self, mut problem: Problem) -> Problem {
        if let Some(key) = problem.field.strip_prefix("annotation ")
            && let Some(origin) = self.origins.get(key)
        {
            problem.field = format!("annotation {origin}");
        }
        problem
    }
}

/// The mutation of a pod template that carries `translation`'s
/// annotations (put there by the caller, in its own copy): the Go
/// templates the translation checked are not parsed again, and every
/// problem names the `vault.hashicorp.com/*` annotation the user wrote.
/// The injector's review and `migrate --from vault-k8s` both come here.
///
/// # Errors
/// Every problem, named as the user wrote it.
pub fn mutate(
    template: &mut Value,
    pointer: &str,
    namespace: Option<&str>,
    config: &InjectorConfig,
    translation: &Translation,
) -> Result<(Outcome, Patch), Vec<Problem>> {
    crate::mutate::mutate_checked(template, pointer, namespace, config, &translation.templates)
        .map_err(|invalid| invalid.problems.into_iter().map(|p| translation.name_origin(p)).collect())
}

/// Whether a pod template's annotations are the Vault Agent injector's: it
/// has `agent-inject` under one of [`PREFIXES`].
pub fn uses_vault_k8s(annotations: Option<&Map<String, Value>>) -> bool {
    prefix_of(annotations).is_some()
}

/// Go's `strconv.ParseBool`, which vault-k8s uses for every flag.
fn parse_bool(key: &str, v: &str) -> Result<bool, Problem> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(vk(key, "must be true or false (as Go's strconv.ParseBool reads it)")),
    }
}

fn vk(key: &str, reason: impl Into<String>) -> Problem {
    Problem { field: format!("annotation {PREFIX}{key}"), reason: reason.into() }
}

/// Annotations that are sidekey annotations under another name (sidekey
/// checks their values).
const RENAMED: &[(&str, Key)] = &[
    ("role", Key::VaultRole),
    ("service", Key::VaultAddr),
    ("namespace", Key::VaultNamespace),
    ("agent-inject-containers", Key::Containers),
    ("agent-requests-cpu", Key::AgentCpuRequest),
    ("agent-limits-cpu", Key::AgentCpuLimit),
    ("agent-requests-mem", Key::AgentMemoryRequest),
    ("agent-limits-mem", Key::AgentMemoryLimit),
    ("template-static-secret-render-interval", Key::Refresh),
];

/// Annotations sidekey accepts and does its own way, with why.
const NOTED: &[(&str, &str)] = &[
    ("agent-cache-enable", "sidekey's agent has no cache listener; the app reads files"),
    ("agent-cache-use-auto-auth-token", "sidekey's agent has no cache listener"),
    ("agent-cache-listener-port", "sidekey's agent has no cache listener"),
    ("agent-cache-exit-on-err", "sidekey's agent has no cache listener"),
    ("agent-image", "the agent image is the injector's (sidekey-agent)"),
    (
        "agent-run-as-user",
        "the agent's user follows the pod (fsGroup, or the app's own UID) so only the app can read the files",
    ),
    ("agent-run-as-group", "the agent's group follows the pod's fsGroup"),
    ("agent-run-as-same-user", "the agent runs as the app's UID whenever the app has one"),
    ("agent-set-security-context", "sidekey's containers always have the restricted security context"),
    ("agent-init-first", "sidekey's agent always starts before the pod's init containers"),
    ("agent-pre-populate", "sidekey's agent is a native sidecar: the app starts once every file exists"),
    ("agent-revoke-grace", "the agent revokes at SIGTERM within the pod's grace period"),
    ("agent-limits-ephemeral", "sidekey's agent writes to memory only"),
    ("agent-requests-ephemeral", "sidekey's agent writes to memory only"),
    ("agent-request-namespace", "set by vault-k8s itself"),
    ("agent-enable-quit", "sidekey's agent exits with the pod (native sidecar)"),
    ("agent-disable-idle-connections", "sidekey's agent keeps at most 2 connections and closes idle ones"),
    ("agent-disable-keep-alives", "sidekey's agent keeps at most 2 connections and closes idle ones"),
    ("template-max-connections-per-host", "sidekey's agent keeps at most 2 connections"),
    ("template-config-exit-on-retry-failure", "sidekey's agent keeps the last good files and retries"),
    ("agent-auto-auth-exit-on-err", "sidekey's agent retries logins with backoff"),
    ("auth-min-backoff", "sidekey's agent backs off on its own schedule"),
    ("auth-max-backoff", "sidekey's agent backs off on its own schedule"),
    ("client-max-retries", "sidekey's agent retries on its own schedule"),
    ("client-timeout", "sidekey's agent uses its own timeouts"),
    ("log-level", "set the agent's log level with the injector's agent settings"),
    ("log-format", "sidekey's agent logs JSON"),
    ("go-max-procs", "sidekey's agent is not a Go program"),
    ("ca-cert", "sidekey trusts the CA the injector is configured with (vault.caCert)"),
    ("tls-secret", "sidekey trusts the CA the injector is configured with (vault.caCert)"),
    ("tls-server-name", "sidekey verifies the name in vault-addr"),
    ("client-cert", "sidekey's agent presents no client certificate to Vault (Vault must not require one)"),
    ("client-key", "sidekey's agent presents no client certificate to Vault (Vault must not require one)"),
    ("ca-key", "sidekey trusts the CA the injector is configured with (vault.caCert)"),
];

/// Annotations that cannot be translated, with what to do instead.
const REFUSED: &[(&str, &str)] = &[
    (
        "agent-configmap",
        "a ConfigMap of Vault Agent configuration cannot be translated; write the templates as agent-inject-template-<name> annotations",
    ),
    ("agent-json-patch", "sidekey does not patch its own containers; they are fixed to pass Pod Security restricted"),
    (
        "agent-init-json-patch",
        "sidekey does not patch its own containers; they are fixed to pass Pod Security restricted",
    ),
    ("agent-extra-secret", "sidekey's agent needs no extra Secret; its config is the annotations"),
    (
        "agent-inject-token",
        "sidekey never writes its Vault token where the app can read it; read secrets through files",
    ),
    (
        "agent-share-process-namespace",
        "sidekey does not turn process sharing on for you: set spec.shareProcessNamespace: true in the pod",
    ),
    ("agent-copy-volume-mounts", "sidekey's agent needs no volumes of the app"),
    ("agent-service-account-token-volume-name", "sidekey mounts its own projected token"),
    ("proxy-address", "sidekey's agent connects to Vault directly"),
];

/// The per-secret annotation families: `<prefix><name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PerSecret {
    /// `agent-inject-secret-`: the path.
    Secret,
    /// `agent-inject-template-`: the template.
    Template,
    /// `agent-inject-template-file-`: a template in the agent's config volume (refused).
    TemplateFile,
    /// `agent-inject-file-`: the file name.
    File,
    /// `agent-inject-perms-`: the file mode.
    Perms,
    /// `agent-inject-command-`: run after a render.
    Command,
    /// `agent-template-left-delim-`.
    LeftDelim,
    /// `agent-template-right-delim-`.
    RightDelim,
    /// `secret-volume-path-`: the file's directory.
    VolumePath,
    /// `error-on-missing-key-`.
    MissingKey,
    /// `preserve-secret-case-`.
    PreserveCase,
}

/// Each family's prefix, longest first so that `agent-inject-template-file-x`
/// is not read as a template named `file-x`.
const PER_SECRET: &[(&str, PerSecret)] = &[
    ("agent-inject-template-file-", PerSecret::TemplateFile),
    ("agent-inject-template-", PerSecret::Template),
    ("agent-inject-secret-", PerSecret::Secret),
    ("agent-inject-command-", PerSecret::Command),
    ("agent-inject-file-", PerSecret::File),
    ("agent-inject-perms-", PerSecret::Perms),
    ("agent-template-left-delim-", PerSecret::LeftDelim),
    ("agent-template-right-delim-", PerSecret::RightDelim),
    ("secret-volume-path-", PerSecret::VolumePath),
    ("error-on-missing-key-", PerSecret::MissingKey),
    ("preserve-secret-case-", PerSecret::PreserveCase),
];

impl PerSecret {
    /// The family and name of `key`, if it is a per-secret annotation.
    fn split(key: &str) -> Option<(PerSecret, &str)> {
        PER_SECRET.iter().find_map(|(p, kind)| key.strip_prefix(p).map(|raw| (*kind, raw)))
    }

    /// `<prefix><raw>`, the key the user wrote.
    fn key(self, raw: &str) -> String {
        let prefix = PER_SECRET.iter().find(|(_, k)| *k == self).map_or("", |(p, _)| p);
        format!("{prefix}{raw}")
    }
}

/// One secret's annotations, by family.
#[derive(Default)]
struct SecretParts<'a> {
    path: Option<&'a str>,
    template: Option<&'a str>,
    file: Option<&'a str>,
    perms: Option<&'a str>,
    command: Option<&'a str>,
    left: Option<&'a str>,
    right: Option<&'a str>,
    volume_path: Option<&'a str>,
    missing_key: Option<&'a str>,
    preserve_case: Option<&'a str>,
}

impl<'a> SecretParts<'a> {
    fn slot(&mut self, kind: PerSecret) -> Option<&mut Option<&'a str>> {
        Some(match kind {
            PerSecret::Secret => &mut self.path,
            PerSecret::Template => &mut self.template,
            PerSecret::TemplateFile => return None,
            PerSecret::File => &mut self.file,
            PerSecret::Perms => &mut self.perms,
            PerSecret::Command => &mut self.command,
            PerSecret::LeftDelim => &mut self.left,
            PerSecret::RightDelim => &mut self.right,
            PerSecret::VolumePath => &mut self.volume_path,
            PerSecret::MissingKey => &mut self.missing_key,
            PerSecret::PreserveCase => &mut self.preserve_case,
        })
    }

    /// The family whose annotation holds the template (or the path it is made from).
    fn template_kind(&self) -> PerSecret {
        if self.template.is_some() { PerSecret::Template } else { PerSecret::Secret }
    }
}

/// What an `agent-inject-command-*` does, in sidekey's terms: a signal to
/// the app, or a POST to a loopback URL.
fn on_change_of(command: &str) -> Option<String> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let signal = |s: &str| {
        let s = s.trim_start_matches('-').trim_start_matches("SIG");
        ["HUP", "USR1", "USR2", "INT", "QUIT", "WINCH", "1"]
            .contains(&s)
            .then(|| if s == "1" { "SIGHUP".to_owned() } else { format!("SIG{s}") })
    };
    match words.as_slice() {
        ["kill" | "pkill" | "killall", "-s", sig, _target, ..] => signal(sig).map(|s| format!("signal:{s}")),
        ["kill" | "pkill" | "killall", sig, _target, ..] if sig.starts_with('-') => {
            signal(sig).map(|s| format!("signal:{s}"))
        }
        ["curl" | "wget", rest @ ..] => {
            let url = rest.iter().find(|w| w.starts_with("http://"))?;
            let url = url.trim_matches(|c| c == '"' || c == '\'');
            let host = url.strip_prefix("http://")?.split('/').next()?;
            let loopback = host.starts_with("127.0.0.1:") || host.starts_with("localhost:");
            loopback.then(|| url.replacen("localhost:", "127.0.0.1:", 1))
        }
        _ => None,
    }
}

/// Translates the `vault.hashicorp.com/*` annotations of a pod template
/// (or the OpenBao injector's: [`PREFIXES`]). `Ok` with no
/// `sidekey.dev/inject` when the pod does not opt in.
///
/// # Errors
/// Every annotation that cannot be translated, each named as the user
/// wrote it (with the pod's prefix) with the reason.
pub fn translate(annotations: &Map<String, Value>) -> Result<Translation, Vec<Problem>> {
    let prefix = prefix_of(Some(annotations)).unwrap_or(PREFIX);
    let respell = |text: &str| if prefix == PREFIX { text.to_owned() } else { text.replace(PREFIX, prefix) };
    match translate_as(annotations, prefix) {
        Ok(mut t) => {
            t.prefix = prefix;
            for origin in t.origins.values_mut() {
                *origin = respell(origin);
            }
            for note in &mut t.notes {
                *note = respell(note);
            }
            // An injector reads one prefix: the others' annotations are not
            // its. One note, however many (each note is a warning to kubectl).
            let mut others =
                annotations.keys().filter(|k| !k.starts_with(prefix) && PREFIXES.iter().any(|p| k.starts_with(p)));
            if !t.annotations.is_empty()
                && let Some(first) = others.next()
            {
                let more = match others.count() {
                    0 => String::new(),
                    n => format!(" and {n} more"),
                };
                t.notes.push(format!("{first}{more}: ignored: this pod's injector annotations are the {prefix} ones"));
            }
            Ok(t)
        }
        Err(problems) => Err(problems
            .into_iter()
            .map(|p| Problem { field: respell(&p.field), reason: respell(&p.reason) })
            .collect()),
    }
}

/// [`translate`] of the annotations under `prefix`; what it says names
/// them with vault-k8s's prefix, which [`translate`] respells.
fn translate_as(annotations: &Map<String, Value>, prefix: &str) -> Result<Translation, Vec<Problem>> {
    let (values, problems) = collect(annotations, prefix)?;
    let inject = match values.get("agent-inject") {
        Some(v) => parse_bool("agent-inject", v).map_err(|p| vec![p])?,
        None => false,
    };
    if !inject {
        // Not for vault-k8s (any more): sidekey's own annotations, if any, decide.
        return Ok(Translation::default());
    }
    let mut t = Translator { problems, ..Translator::default() };
    if annotations.keys().any(|k| k.starts_with(SIDEKEY)) {
        t.problems.push(Problem {
            field: format!("annotation {SIDEKEY}*"),
            reason: format!("a pod uses either {PREFIX} or {SIDEKEY} annotations, not both"),
        });
    }
    if values.get("agent-inject-status") == Some(&"injected") {
        t.out.annotations.insert(Key::Status.key(), "injected".into());
        return Ok(t.out);
    }
    t.set(Key::Inject, "true");
    for (&key, &value) in &values {
        t.annotation(key, value);
    }
    t.pod_level(&values);
    let secrets = std::mem::take(&mut t.secrets);
    for (raw, s) in &secrets {
        t.secret(raw, s);
    }
    if let Some((o, raw)) = t.on_change.take() {
        t.set(Key::OnChange, &o);
        t.out.origins.insert(Key::OnChange.key(), format!("{PREFIX}{}", PerSecret::Command.key(&raw)));
    }
    if t.problems.is_empty() { Ok(t.out) } else { Err(t.problems) }
}

/// The string value of every `vault.hashicorp.com/` annotation, by the key
/// after the prefix; a value that is not a string is a problem.
///
/// # Errors
/// A flood of annotations, refused at once: mutating admission runs before
/// the apiserver checks the annotations' size.
#[allow(clippy::type_complexity)]
fn collect<'a>(
    annotations: &'a Map<String, Value>,
    prefix: &str,
) -> Result<(BTreeMap<&'a str, &'a str>, Vec<Problem>), Vec<Problem>> {
    let ours = annotations.keys().filter(|k| k.starts_with(prefix)).count();
    if ours > crate::annotations::MAX_ANNOTATIONS {
        return Err(vec![Problem {
            field: format!("annotation {PREFIX}*"),
            reason: format!(
                "{ours} {PREFIX} annotations; at most {} are accepted",
                crate::annotations::MAX_ANNOTATIONS
            ),
        }]);
    }
    if let Some(p) = crate::annotations::annotation_bytes_problem(annotations) {
        return Err(vec![p]);
    }
    let mut problems = Vec::new();
    let mut values = BTreeMap::new();
    for (k, v) in annotations {
        let Some(key) = k.strip_prefix(prefix) else { continue };
        match v.as_str() {
            Some(s) => {
                values.insert(key, s);
            }
            None => problems.push(vk(key, "the value must be a string (quote it in YAML)")),
        }
    }
    Ok((values, problems))
}

/// The translation as it is built: the pod-level settings read so far and
/// the secrets' annotations grouped by name.
struct Translator<'a> {
    out: Translation,
    problems: Vec<Problem>,
    secrets: BTreeMap<&'a str, SecretParts<'a>>,
    default_json: bool,
    pod_preserve_case: Option<&'a str>,
    mount_path: &'a str,
    /// The on-change chosen so far, and the secret whose command chose it.
    on_change: Option<(String, String)>,
}

impl Default for Translator<'_> {
    fn default() -> Self {
        Translator {
            out: Translation::default(),
            problems: Vec::new(),
            secrets: BTreeMap::new(),
            default_json: false,
            pod_preserve_case: None,
            mount_path: "/vault/secrets",
            on_change: None,
        }
    }
}

impl<'a> Translator<'a> {
    fn set(&mut self, k: Key, v: &str) {
        self.out.annotations.insert(k.key(), v.to_owned());
    }

    /// One annotation: grouped under its secret, renamed, noted, refused, or
    /// read as a pod-level setting.
    fn annotation(&mut self, key: &'a str, value: &'a str) {
        if let Some((kind, raw)) = PerSecret::split(key) {
            match self.secrets.entry(raw).or_default().slot(kind) {
                Some(slot) => *slot = Some(value),
                None => self.problems.push(vk(key, "a template file in the agent's config volume cannot be translated; put the template in agent-inject-template-<name>")),
            }
            return;
        }
        if let Some((_, k)) = RENAMED.iter().find(|(k, _)| *k == key) {
            self.set(*k, value);
            self.out.origins.insert(k.key(), format!("{PREFIX}{key}"));
            return;
        }
        if let Some((_, why)) = NOTED.iter().find(|(k, _)| *k == key) {
            self.out.notes.push(format!("{PREFIX}{key}: accepted, not needed: {why}"));
            return;
        }
        if let Some((_, why)) = REFUSED.iter().find(|(k, _)| *k == key) {
            self.problems.push(vk(key, *why));
            return;
        }
        if let Err(p) = self.setting(key, value) {
            self.problems.push(p);
        }
    }

    /// A pod-level setting with its own translation.
    fn setting(&mut self, key: &str, value: &'a str) -> Result<(), Problem> {
        match key {
            "agent-inject" | "agent-inject-status" => {}
            "auth-path" => {
                let mount = value.trim_matches('/');
                self.set(Key::VaultAuthMount, mount.strip_prefix("auth/").unwrap_or(mount));
            }
            "auth-type" if matches!(value, "kubernetes" | "jwt") => self.set(Key::VaultAuthMethod, value),
            "auth-type" => return Err(vk(key, "sidekey logs in with kubernetes or jwt auth")),
            "secret-volume-path" => self.mount_path = value,
            "preserve-secret-case" => self.pod_preserve_case = Some(value),
            "agent-pre-populate-only" => {
                if parse_bool(key, value)? {
                    self.set(Key::Lifecycle, "init-only");
                }
            }
            "agent-revoke-on-shutdown" => {
                let b = parse_bool(key, value)?;
                self.set(Key::RevokeOnShutdown, if b { "true" } else { "false" });
            }
            "tls-skip-verify" => {
                if parse_bool(key, value)? {
                    return Err(vk(
                        key,
                        "sidekey always verifies Vault's certificate; give the injector the CA (vault.caCert)",
                    ));
                }
            }
            "agent-inject-default-template" => match value {
                "map" => {}
                "json" => self.default_json = true,
                _ => return Err(vk(key, "must be map or json")),
            },
            _ if key.starts_with("auth-config-") || key.starts_with("agent-telemetry-") => {
                return Err(vk(key, "Vault Agent's auto-auth and telemetry settings have no sidekey equivalent"));
            }
            _ => return Err(vk(key, "unknown vault-k8s annotation (sidekey refuses what it does not understand)")),
        }
        Ok(())
    }

    /// The mount path, and where each pod-level setting came from.
    fn pod_level(&mut self, values: &BTreeMap<&str, &str>) {
        let mount_path = self.mount_path.trim_end_matches('/').to_owned();
        self.set(Key::MountPath, &mount_path);
        for (key, k) in [
            ("auth-path", Key::VaultAuthMount),
            ("auth-type", Key::VaultAuthMethod),
            ("secret-volume-path", Key::MountPath),
            ("agent-pre-populate-only", Key::Lifecycle),
            ("agent-revoke-on-shutdown", Key::RevokeOnShutdown),
        ] {
            if values.contains_key(key) {
                self.out.origins.insert(k.key(), format!("{PREFIX}{key}"));
            }
        }
    }

    /// One secret's file: its name, template (as written, or Vault Agent's
    /// default), delimiters, mode, missing-key rule and command.
    fn secret(&mut self, raw: &str, s: &SecretParts<'_>) {
        let vk_of = |kind: PerSecret, reason: String| vk(&kind.key(raw), reason);
        if s.path.is_none() && s.template.is_none() {
            // A companion without its secret: vault-k8s ignores it; say so.
            for (kind, v) in [(PerSecret::File, s.file), (PerSecret::Perms, s.perms), (PerSecret::Command, s.command)] {
                if v.is_some() {
                    let reason = format!("there is no {PREFIX}{}", PerSecret::Secret.key(raw));
                    self.problems.push(vk_of(kind, reason));
                }
            }
            return;
        }
        let preserve = match s.preserve_case.or(self.pod_preserve_case) {
            Some(v) => parse_bool(&PerSecret::PreserveCase.key(raw), v).unwrap_or(false),
            None => false,
        };
        let name = match s.file {
            Some(f) => {
                let f = f.trim_start_matches('/');
                if f.contains('/') {
                    let reason = "sidekey writes files at the top of the mount; a subdirectory is not supported";
                    self.problems.push(vk_of(PerSecret::File, reason.into()));
                    return;
                }
                f.to_owned()
            }
            None if preserve => raw.to_owned(),
            None => raw.to_lowercase(),
        };
        if let Some(p) = file_name_problem(&name) {
            let kind = if s.file.is_some() { PerSecret::File } else { PerSecret::Secret };
            self.problems.push(vk_of(kind, format!("the file name {name:?} {p}")));
            return;
        }
        if let Some(v) = s.volume_path
            && v.trim_end_matches('/') != self.mount_path.trim_end_matches('/')
        {
            let reason =
                "sidekey writes every file into one mount (secret-volume-path); a second path is not supported";
            self.problems.push(vk_of(PerSecret::VolumePath, reason.into()));
            return;
        }
        let missing_key_error = match s.missing_key.map(|v| parse_bool(&PerSecret::MissingKey.key(raw), v)) {
            Some(Err(p)) => {
                self.problems.push(p);
                return;
            }
            Some(Ok(b)) => b,
            None => false,
        };
        let path = s.path.map(str::trim).filter(|p| !p.is_empty());
        let template = match (s.template, path) {
            (Some(t), _) => t.to_owned(),
            (None, Some(p)) if self.default_json => default_json_template(p),
            (None, Some(p)) => default_map_template(p),
            (None, None) => return,
        };
        let delims = match (s.left, s.right) {
            (None, None) => None,
            (l, r) => Some(Delims { left: l.unwrap_or("{{").to_owned(), right: r.unwrap_or("}}").to_owned() }),
        };
        let template_kind = s.template_kind();
        let checked = match checked_template(&template, delims.as_ref()) {
            Ok(c) => c,
            Err(e) => {
                self.problems.push(vk_of(template_kind, e.to_string()));
                return;
            }
        };
        let first = checked.calls.first().map(|c| c.path.clone());
        let Some(reference) = path.map(str::to_owned).or(first) else {
            self.problems.push(vk_of(template_kind, "the template reads no secret and names no path".into()));
            return;
        };
        let named = |n: Named| format!("{SIDEKEY}{}", n.name(&name));
        if self.out.annotations.contains_key(&named(Named::Secret)) {
            self.problems.push(vk_of(template_kind, format!("a second secret writes the file {name:?}")));
            return;
        }
        for (n, kind) in [
            (Named::Secret, PerSecret::Secret),
            (Named::Format, PerSecret::Secret),
            (Named::Template, template_kind),
            (Named::Delims, PerSecret::LeftDelim),
            (Named::FileMode, PerSecret::Perms),
            (Named::MissingKey, PerSecret::MissingKey),
        ] {
            self.out.origins.insert(named(n), format!("{PREFIX}{}", kind.key(raw)));
        }
        let out = &mut self.out;
        out.annotations.insert(named(Named::Secret), format!("vault:{reference}"));
        out.annotations.insert(named(Named::Format), "go-template".into());
        out.annotations.insert(named(Named::Template), template);
        out.templates.insert(name.clone(), checked);
        if let Some(d) = delims {
            out.annotations.insert(named(Named::Delims), d.to_string());
        }
        if let Some(p) = s.perms {
            // The mount is read-only in the app's containers, so write and
            // execute bits meant nothing there: only the read bits are kept.
            let mode = match u32::from_str_radix(p.trim_start_matches("0o"), 8) {
                Ok(m) if m & 0o333 != 0 && m <= 0o7777 => {
                    let read = m & 0o444;
                    out.notes.push(format!(
                        "{PREFIX}{}: {p} is written as {read:04o}: sidekey's files are read-only",
                        PerSecret::Perms.key(raw)
                    ));
                    format!("{read:04o}")
                }
                _ => p.to_owned(),
            };
            out.annotations.insert(named(Named::FileMode), mode);
        }
        if missing_key_error {
            out.annotations.insert(named(Named::MissingKey), "error".into());
        }
        if let Some(c) = s.command {
            self.command(raw, c);
        }
    }

    /// An `agent-inject-command-*` as the pod's on-change: one way for the
    /// whole pod.
    fn command(&mut self, raw: &str, command: &str) {
        let key = PerSecret::Command.key(raw);
        match on_change_of(command) {
            None => self.problems.push(vk(
                &key,
                "sidekey runs no shell: it can send the app a signal (kill -HUP 1, pkill -HUP <name>) or POST to a loopback URL (curl http://127.0.0.1:PORT/PATH); use one of those, or sidekey.dev/on-change",
            )),
            Some(o) => match &self.on_change {
                Some((first, other)) if *first != o => self.problems.push(vk(
                    &key,
                    format!(
                        "sidekey tells the app of a change one way for the whole pod, and {PREFIX}{} does it another",
                        PerSecret::Command.key(other)
                    ),
                )),
                Some(_) => {}
                None => self.on_change = Some((o, raw.to_owned())),
            },
        }
    }
}

#[cfg(test)]
mod tests;
