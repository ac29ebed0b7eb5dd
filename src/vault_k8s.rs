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
//! Nothing else in the core depends on this module: the injector calls it
//! when its compatibility setting is on, and `sidekey migrate --from
//! vault-k8s` writes its result into manifests.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::PREFIX as SIDEKEY;
use crate::agent_config::{CheckedTemplates, Delims, checked_template};
use crate::annotations::{Key, Named, Problem};
use crate::names::file_name_problem;

pub mod migrate;

/// The prefix of vault-k8s's annotations.
pub const PREFIX: &str = "vault.hashicorp.com/";

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

/// Whether a pod template's annotations are vault-k8s's: it has
/// `vault.hashicorp.com/agent-inject`.
pub fn uses_vault_k8s(annotations: Option<&Map<String, Value>>) -> bool {
    annotations.is_some_and(|a| a.contains_key(&format!("{PREFIX}agent-inject")))
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

/// Per-secret annotation kinds, longest prefix first so that
/// `agent-inject-template-file-x` is not read as a template named `file-x`.
const PER_SECRET: &[&str] = &[
    "agent-inject-template-file-",
    "agent-inject-template-",
    "agent-inject-secret-",
    "agent-inject-command-",
    "agent-inject-file-",
    "agent-inject-perms-",
    "agent-template-left-delim-",
    "agent-template-right-delim-",
    "secret-volume-path-",
    "error-on-missing-key-",
    "preserve-secret-case-",
];

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

/// Translates the `vault.hashicorp.com/*` annotations of a pod template.
/// `Ok` with no `sidekey.dev/inject` when the pod does not opt in.
///
/// # Errors
/// Every annotation that cannot be translated, each named with the reason.
pub fn translate(annotations: &Map<String, Value>) -> Result<Translation, Vec<Problem>> {
    let mut out = Translation::default();
    // Mutating admission runs before the apiserver checks the annotations'
    // size: refuse a flood at once instead of judging each.
    let ours = annotations.keys().filter(|k| k.starts_with(PREFIX)).count();
    if ours > crate::annotations::MAX_ANNOTATIONS {
        return Err(vec![Problem {
            field: format!("annotation {PREFIX}*"),
            reason: format!(
                "{ours} {PREFIX} annotations; at most {} are accepted",
                crate::annotations::MAX_ANNOTATIONS
            ),
        }]);
    }
    let mut problems = Vec::new();
    let mut values: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in annotations {
        let Some(key) = k.strip_prefix(PREFIX) else { continue };
        match v.as_str() {
            Some(s) => {
                values.insert(key, s);
            }
            None => problems.push(vk(key, "the value must be a string (quote it in YAML)")),
        }
    }
    let inject = match values.get("agent-inject") {
        Some(v) => parse_bool("agent-inject", v).map_err(|p| vec![p])?,
        None => false,
    };
    if !inject {
        // Not for vault-k8s (any more): sidekey's own annotations, if any, decide.
        return Ok(Translation::default());
    }
    if annotations.keys().any(|k| k.starts_with(SIDEKEY)) {
        problems.push(Problem {
            field: format!("annotation {SIDEKEY}*"),
            reason: format!("a pod uses either {PREFIX} or {SIDEKEY} annotations, not both"),
        });
    }
    if values.get("agent-inject-status") == Some(&"injected") {
        out.annotations.insert(Key::Status.key(), "injected".into());
        return Ok(out);
    }
    let set = |out: &mut Translation, k: Key, v: &str| {
        out.annotations.insert(k.key(), v.to_owned());
    };
    set(&mut out, Key::Inject, "true");
    let mut secrets: BTreeMap<&str, SecretParts<'_>> = BTreeMap::new();
    let mut default_json = false;
    let mut pod_preserve_case = None;
    let mut mount_path = "/vault/secrets";
    for (&key, &value) in &values {
        if let Some((prefix, raw)) = PER_SECRET.iter().find_map(|p| key.strip_prefix(p).map(|raw| (*p, raw))) {
            let s = secrets.entry(raw).or_default();
            let slot = match prefix {
                "agent-inject-secret-" => &mut s.path,
                "agent-inject-template-" => &mut s.template,
                "agent-inject-template-file-" => {
                    problems.push(vk(key, "a template file in the agent's config volume cannot be translated; put the template in agent-inject-template-<name>"));
                    continue;
                }
                "agent-inject-file-" => &mut s.file,
                "agent-inject-perms-" => &mut s.perms,
                "agent-inject-command-" => &mut s.command,
                "agent-template-left-delim-" => &mut s.left,
                "agent-template-right-delim-" => &mut s.right,
                "secret-volume-path-" => &mut s.volume_path,
                "error-on-missing-key-" => &mut s.missing_key,
                _ => &mut s.preserve_case,
            };
            *slot = Some(value);
            continue;
        }
        if let Some((_, k)) = RENAMED.iter().find(|(k, _)| *k == key) {
            set(&mut out, *k, value);
            out.origins.insert(k.key(), format!("{PREFIX}{key}"));
            continue;
        }
        if let Some((_, why)) = NOTED.iter().find(|(k, _)| *k == key) {
            out.notes.push(format!("{PREFIX}{key}: accepted, not needed: {why}"));
            continue;
        }
        if let Some((_, why)) = REFUSED.iter().find(|(k, _)| *k == key) {
            problems.push(vk(key, *why));
            continue;
        }
        let result = match key {
            "agent-inject" | "agent-inject-status" => Ok(()),
            "auth-path" => {
                let mount = value.trim_matches('/');
                set(&mut out, Key::VaultAuthMount, mount.strip_prefix("auth/").unwrap_or(mount));
                Ok(())
            }
            "auth-type" if matches!(value, "kubernetes" | "jwt") => {
                set(&mut out, Key::VaultAuthMethod, value);
                Ok(())
            }
            "auth-type" => Err(vk(key, "sidekey logs in with kubernetes or jwt auth")),
            "secret-volume-path" => {
                mount_path = value;
                Ok(())
            }
            "preserve-secret-case" => {
                pod_preserve_case = Some(value);
                Ok(())
            }

            "agent-pre-populate-only" => parse_bool(key, value).map(|only| {
                if only {
                    set(&mut out, Key::Lifecycle, "init-only");
                }
            }),
            "agent-revoke-on-shutdown" => {
                parse_bool(key, value).map(|b| set(&mut out, Key::RevokeOnShutdown, if b { "true" } else { "false" }))
            }

            "tls-skip-verify" => parse_bool(key, value).and_then(|skip| match skip {
                true => {
                    Err(vk(key, "sidekey always verifies Vault's certificate; give the injector the CA (vault.caCert)"))
                }
                false => Ok(()),
            }),

            "agent-inject-default-template" => match value {
                "map" => Ok(()),
                "json" => {
                    default_json = true;
                    Ok(())
                }
                _ => Err(vk(key, "must be map or json")),
            },
            _ if key.starts_with("auth-config-") || key.starts_with("agent-telemetry-") => {
                Err(vk(key, "Vault Agent's auto-auth and telemetry settings have no sidekey equivalent"))
            }
            _ => Err(vk(key, "unknown vault-k8s annotation (sidekey refuses what it does not understand)")),
        };
        if let Err(p) = result {
            problems.push(p);
        }
    }
    set(&mut out, Key::MountPath, mount_path.trim_end_matches('/'));
    for (key, k) in [
        ("auth-path", Key::VaultAuthMount),
        ("auth-type", Key::VaultAuthMethod),
        ("secret-volume-path", Key::MountPath),
        ("agent-pre-populate-only", Key::Lifecycle),
        ("agent-revoke-on-shutdown", Key::RevokeOnShutdown),
    ] {
        if values.contains_key(key) {
            out.origins.insert(k.key(), format!("{PREFIX}{key}"));
        }
    }
    let mut on_change: Option<(String, String)> = None;
    for (raw, s) in &secrets {
        if s.path.is_none() && s.template.is_none() {
            // A companion without its secret: vault-k8s ignores it; say so.
            for (what, v) in
                [("agent-inject-file-", s.file), ("agent-inject-perms-", s.perms), ("agent-inject-command-", s.command)]
            {
                if v.is_some() {
                    problems
                        .push(vk(&format!("{what}{raw}"), format!("there is no {PREFIX}agent-inject-secret-{raw}")));
                }
            }
            continue;
        }
        let key_of = |what: &str| format!("{what}{raw}");
        let preserve = match s.preserve_case.or(pod_preserve_case) {
            Some(v) => parse_bool(&key_of("preserve-secret-case-"), v).unwrap_or(false),
            None => false,
        };
        let name = match s.file {
            Some(f) => {
                let f = f.trim_start_matches('/');
                if f.contains('/') {
                    problems.push(vk(
                        &key_of("agent-inject-file-"),
                        "sidekey writes files at the top of the mount; a subdirectory is not supported",
                    ));
                    continue;
                }
                f.to_owned()
            }
            None if preserve => (*raw).to_owned(),
            None => raw.to_lowercase(),
        };
        if let Some(p) = file_name_problem(&name) {
            problems.push(vk(
                &key_of(if s.file.is_some() { "agent-inject-file-" } else { "agent-inject-secret-" }),
                format!("the file name {name:?} {p}"),
            ));
            continue;
        }
        if let Some(v) = s.volume_path
            && v.trim_end_matches('/') != mount_path.trim_end_matches('/')
        {
            problems.push(vk(
                &key_of("secret-volume-path-"),
                "sidekey writes every file into one mount (secret-volume-path); a second path is not supported",
            ));
            continue;
        }
        let missing_key_error = match s.missing_key.map(|v| parse_bool(&key_of("error-on-missing-key-"), v)) {
            Some(Err(p)) => {
                problems.push(p);
                continue;
            }
            Some(Ok(b)) => b,
            None => false,
        };
        let path = s.path.map(str::trim).filter(|p| !p.is_empty());
        let template = match (s.template, path) {
            (Some(t), _) => t.to_owned(),
            (None, Some(p)) if default_json => default_json_template(p),
            (None, Some(p)) => default_map_template(p),
            (None, None) => continue,
        };
        let delims = match (s.left, s.right) {
            (None, None) => None,
            (l, r) => Some(Delims { left: l.unwrap_or("{{").to_owned(), right: r.unwrap_or("}}").to_owned() }),
        };
        let template_key =
            if s.template.is_some() { key_of("agent-inject-template-") } else { key_of("agent-inject-secret-") };
        let checked = match checked_template(&template, delims.as_ref()) {
            Ok(c) => c,
            Err(e) => {
                problems.push(vk(&template_key, e));
                continue;
            }
        };
        let first = checked.calls.first().map(|c| c.path.clone());
        let Some(reference) = path.map(str::to_owned).or(first) else {
            problems.push(vk(&template_key, "the template reads no secret and names no path"));
            continue;
        };
        let named = |n: Named| format!("{SIDEKEY}{}", n.name(&name));
        if out.annotations.contains_key(&named(Named::Secret)) {
            problems.push(vk(&template_key, format!("a second secret writes the file {name:?}")));
            continue;
        }
        for (n, what) in [
            (Named::Secret, "agent-inject-secret-"),
            (Named::Format, "agent-inject-secret-"),
            (Named::Template, if s.template.is_some() { "agent-inject-template-" } else { "agent-inject-secret-" }),
            (Named::Delims, "agent-template-left-delim-"),
            (Named::FileMode, "agent-inject-perms-"),
            (Named::MissingKey, "error-on-missing-key-"),
        ] {
            out.origins.insert(named(n), format!("{PREFIX}{}", key_of(what)));
        }
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
                        "{PREFIX}agent-inject-perms-{raw}: {p} is written as {read:04o}: sidekey's files are read-only"
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
            match on_change_of(c) {
                None => problems.push(vk(
                    &key_of("agent-inject-command-"),
                    "sidekey runs no shell: it can send the app a signal (kill -HUP 1, pkill -HUP <name>) or POST to a loopback URL (curl http://127.0.0.1:PORT/PATH); use one of those, or sidekey.dev/on-change",
                )),
                Some(o) => match &on_change {
                    Some((first, other)) if *first != o => problems.push(vk(
                        &key_of("agent-inject-command-"),
                        format!("sidekey tells the app of a change one way for the whole pod, and {PREFIX}agent-inject-command-{other} does it another"),
                    )),
                    Some(_) => {}
                    None => on_change = Some((o, (*raw).to_owned())),
                },
            }
        }
    }
    if let Some((o, raw)) = on_change {
        set(&mut out, Key::OnChange, &o);
        out.origins.insert(Key::OnChange.key(), format!("{PREFIX}agent-inject-command-{raw}"));
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

#[cfg(test)]
mod tests;
