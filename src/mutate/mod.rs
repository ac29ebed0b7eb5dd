//! The pod mutation: one pure function from a pod template (its raw JSON)
//! and the injector config to the injected template, or every problem that
//! stops it.
//!
//! It runs in two steps: [`plan`] reads and validates the pod (it can fail,
//! and collects every problem, each from a named check), and [`apply`]
//! writes what the plan decided, recording the JSON Patch as it goes (it
//! cannot fail).
//!
//! It edits the raw JSON in place rather than round-tripping typed structs,
//! so fields this crate has never heard of (newer Kubernetes versions,
//! extensions) survive untouched. Nothing is half-applied: the template is
//! only replaced when the whole mutation succeeded. What it adds is described
//! in `docs/architecture.md`; the annotation contract in `docs/annotations.md`.
//! Pod Security: <https://kubernetes.io/docs/concepts/security/pod-security-standards/>.

mod apply;
mod plan;
#[cfg(test)]
mod tests;
mod warning;

use json_patch::Patch;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::agent_config::CheckedTemplates;
use crate::annotations::{self, Problem};
use crate::config::InjectorConfig;
use crate::pod::{EnvFromSource, EnvSource, PodSpec};
use crate::reference::{Reference, is_env_reference};

pub use crate::layout::*;
pub use warning::Warning;

/// The most env vars and `envFrom` entries one pod may have moved to files.
/// Each costs patch operations, an agent-config entry and answer bytes; a
/// real pod has tens, and this bound keeps the largest review to a few MiB
/// of heap (a 2.4 MB pod of 39,000 references took 55 MiB without it).
pub const MAX_MOVED: usize = 1000;

/// What the mutation did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The template does not opt in; nothing changed.
    NotOptedIn,
    /// The template carries `sidekey.dev/status`; nothing changed.
    AlreadyInjected,
    /// The template was injected.
    Injected {
        /// Things the user should know (world-readable files, unmapped
        /// Secrets left in env, …).
        warnings: Vec<Warning>,
    },
}

/// Why a template cannot be injected: every problem, each naming its field.
/// Its message lists the first [`Invalid::SHOWN`] and counts the rest, so a
/// pod built to produce a million problems gets a short answer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", self.message())]
pub struct Invalid {
    /// The problems, in the order found.
    pub problems: Vec<Problem>,
}

impl Invalid {
    /// How many problems the message spells out.
    pub const SHOWN: usize = 20;

    fn message(&self) -> String {
        let mut text = self.problems.iter().take(Self::SHOWN).map(ToString::to_string).collect::<Vec<_>>().join("; ");
        if self.problems.len() > Self::SHOWN {
            text.push_str(&format!("; and {} more problems", self.problems.len() - Self::SHOWN));
        }
        text
    }
}

/// Adds to `patch` (of an injected Pod, at the pod's root) an operation
/// that sets the annotation `key` to `value`: the pod has annotations,
/// since injection marked it.
pub fn set_annotation(patch: &mut Patch, key: &str, value: &str) {
    patch.0.push(json_patch::PatchOperation::Add(json_patch::AddOperation {
        path: json_patch::jsonptr::PointerBuf::from_tokens(["metadata", "annotations", key]),
        value: Value::String(value.to_owned()),
    }));
}

impl From<Vec<Problem>> for Invalid {
    fn from(problems: Vec<Problem>) -> Self {
        Invalid { problems }
    }
}

/// The file name for a migrated env var: the variable's name in DNS-label
/// form plus 8 hex digits of SHA-256 of the canonical reference, so that two
/// different references never share a file, even under one variable name.
pub fn env_file_name(var: &str, reference: &Reference) -> String {
    let mut base = String::with_capacity(var.len());
    for c in var.chars() {
        let c = if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' };
        if !(c == '-' && (base.is_empty() || base.ends_with('-'))) {
            base.push(c);
        }
    }
    base.truncate(54);
    let base = base.trim_end_matches('-');
    let base = if base.is_empty() { "env" } else { base };
    let digest = Sha256::digest(reference.to_string().as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{base}-{hash}")
}

/// Warnings for env-var secrets in a template that did not opt in: what the
/// webhook adds to its response so that users find what to migrate.
pub fn env_secret_warnings(template: &Value) -> Vec<Warning> {
    let mut out = Vec::new();
    for c in PodSpec::of_template(template).app_containers() {
        let container = || c.name().to_owned();
        for e in c.env() {
            let var = e.name.to_owned();
            match e.source {
                EnvSource::Value(v) if is_env_reference(v) => {
                    out.push(Warning::ReferenceNotInjected { container: container(), var });
                }
                EnvSource::SecretKeyRef(r) => {
                    let Some(secret) = r.secret else { continue };
                    out.push(Warning::SecretInEnv { container: container(), var, secret: secret.to_owned() });
                }
                _ => {}
            }
        }
        for e in c.env_from() {
            if let EnvFromSource::Secret { name: Some(secret), .. } = e.source {
                out.push(Warning::SecretEnvFrom { container: container(), secret: secret.to_owned() });
            }
        }
    }
    out
}

/// Injects sidekey into a pod template: `{metadata, spec}` of a Pod or of a
/// workload's `spec.template`.
///
/// On success the template is replaced by the injected one (or left as is
/// when it does not opt in or was injected already); on error it is left
/// untouched.
///
/// # Errors
/// [`Invalid`] with every problem found, each naming the annotation,
/// container, env var or field and the reason.
pub fn mutate_template(template: &mut Value, config: &InjectorConfig) -> Result<Outcome, Invalid> {
    mutate_template_at(template, "", None, config).map(|(outcome, _)| outcome)
}

/// Like [`mutate_template`], and also returns the JSON Patch that turns the
/// input into the output, with paths under `pointer` (the template's JSON
/// pointer inside the object the patch is applied to: `""` for a Pod). The
/// operations are recorded as the mutation is applied, so no copy of the
/// input and no diff are needed on the webhook's hot path. `namespace` is
/// the namespace the policy is checked for (the webhook's request
/// namespace); `None`: the template's own `metadata.namespace`.
///
/// # Errors
/// As [`mutate_template`].
pub fn mutate_template_at(
    template: &mut Value,
    pointer: &str,
    namespace: Option<&str>,
    config: &InjectorConfig,
) -> Result<(Outcome, Patch), Invalid> {
    mutate_checked(template, pointer, namespace, config, &CheckedTemplates::new())
}

/// [`mutate_template_at`] with the Go templates the review checked already
/// (the vault-k8s translation's), so each is parsed once.
///
/// # Errors
/// As [`mutate_template`].
pub fn mutate_checked(
    template: &mut Value,
    pointer: &str,
    namespace: Option<&str>,
    config: &InjectorConfig,
    checked: &CheckedTemplates,
) -> Result<(Outcome, Patch), Invalid> {
    let annotations = template.pointer("/metadata/annotations").and_then(Value::as_object);
    let a = annotations::parse_checked(annotations, checked)?;
    if !a.inject {
        return Ok((Outcome::NotOptedIn, Patch(Vec::new())));
    }
    if a.injected {
        return Ok((Outcome::AlreadyInjected, Patch(Vec::new())));
    }
    let namespace = namespace
        .map(str::to_owned)
        .or_else(|| template.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let Some(spec) = template.get_mut("spec").and_then(Value::as_object_mut) else {
        return Err(
            vec![Problem { field: "spec".into(), reason: "missing: a pod template needs a spec".into() }].into()
        );
    };
    let plan = plan::plan(spec, &a, config, &namespace)?;
    let mut ops = apply::Ops::new(pointer);
    apply::apply(spec, &plan, &a, config, &mut ops);
    apply::mark_injected(template, &mut ops);
    Ok((Outcome::Injected { warnings: plan.warnings }, Patch(ops.into_ops())))
}
