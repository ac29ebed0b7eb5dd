//! The pod mutation: one pure function from a pod template (its raw JSON)
//! and the injector config to the injected template, or every problem that
//! stops it.
//!
//! It edits the raw JSON in place rather than round-tripping typed structs,
//! so fields this crate has never heard of (newer Kubernetes versions,
//! extensions) survive untouched. Nothing is half-applied: the template is
//! only replaced when the whole mutation succeeded. What it adds is described
//! in `docs/architecture.md`; the annotation contract in `docs/annotations.md`.
//! Pod Security: <https://kubernetes.io/docs/concepts/security/pod-security-standards/>.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::PREFIX;
use crate::agent_config::{self, AgentConfig, AwsConfig, FileSpec, VaultAuth, VaultConfig};
use crate::annotations::{self, EnvMode, Format, Lifecycle, OnChange, PodAnnotations, Problem};
use crate::config::InjectorConfig;
use crate::reference::{Backend, Reference, is_env_reference};

/// The in-memory volume holding the rendered files.
pub const SECRETS_VOLUME: &str = "sidekey-secrets";
/// The projected service-account token the agent logs in with.
pub const TOKEN_VOLUME: &str = "sidekey-token";
/// The in-memory volume the `exec` wrapper binary is copied into.
pub const BIN_VOLUME: &str = "sidekey-bin";
/// The in-memory volume, mounted into the agent only, where it keeps its
/// Vault token and leases across its own restarts.
pub const STATE_VOLUME: &str = "sidekey-state";
/// Where the agent mounts [`STATE_VOLUME`].
pub const STATE_DIR: &str = "/sidekey/state";
/// The agent container (native sidecar, init-only, or legacy regular container).
pub const AGENT_CONTAINER: &str = "sidekey-agent";
/// The legacy shape's one-shot init container.
pub const INIT_CONTAINER: &str = "sidekey-init";
/// The init container that copies the agent binary for `exec` mode.
pub const INSTALL_CONTAINER: &str = "sidekey-install";
/// Where the agent sees its service-account token.
pub const TOKEN_DIR: &str = "/var/run/secrets/sidekey.dev/serviceaccount";
/// Where the `exec` wrapper binary is mounted.
pub const BIN_DIR: &str = "/sidekey/bin";
/// The agent binary inside the agent image.
pub const AGENT_BINARY: &str = "/sidekey-agent";
/// The value of the `status` annotation after injection.
pub const STATUS_INJECTED: &str = "injected";

/// The most env vars and `envFrom` entries one pod may have moved to files.
/// Each costs patch operations, an agent-config entry and answer bytes; a
/// real pod has tens, and this bound keeps the largest review to a few MiB
/// of heap (a 2.4 MB pod of 39,000 references took 55 MiB without it).
pub const MAX_MOVED: usize = 1000;

const RESERVED_VOLUMES: [&str; 4] = [SECRETS_VOLUME, TOKEN_VOLUME, BIN_VOLUME, STATE_VOLUME];
const RESERVED_CONTAINERS: [&str; 3] = [AGENT_CONTAINER, INIT_CONTAINER, INSTALL_CONTAINER];

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
        warnings: Vec<String>,
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

impl From<Vec<Problem>> for Invalid {
    fn from(problems: Vec<Problem>) -> Self {
        Invalid { problems }
    }
}

/// Which list a container lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Init,
    Regular,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Init => "initContainers",
            Kind::Regular => "containers",
        }
    }
}

/// An env var (or envFrom entry) that becomes a file.
#[derive(Debug, Clone)]
enum Migrated {
    Var { index: usize, var: String, file: String },
    Dir { index: usize, dir: String, prefix: String },
}

/// The files to render, one per distinct reference.
#[derive(Default)]
struct Files {
    specs: Vec<FileSpec>,
    /// Canonical reference text → file name, for sharing.
    by_ref: HashMap<String, String>,
    /// File name → index in `specs` (lookups stay constant-time in pods
    /// with thousands of env vars).
    by_name: HashMap<String, usize>,
    /// Which entries got their mode explicitly (annotation).
    explicit_mode: BTreeSet<String>,
}

impl Files {
    fn add(&mut self, spec: FileSpec, shareable: bool) {
        if shareable {
            self.by_ref.entry(spec.reference.to_string()).or_insert_with(|| spec.name.clone());
        }
        self.by_name.insert(spec.name.clone(), self.specs.len());
        self.specs.push(spec);
    }

    fn has(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut FileSpec> {
        let i = *self.by_name.get(name)?;
        self.specs.get_mut(i)
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

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn container_name(c: &Value) -> &str {
    str_at(c, "name").unwrap_or("")
}

/// The UID a container runs as, if the spec says so (container level wins).
fn run_as_user(c: &Value, pod_sc: Option<&Value>) -> Option<i64> {
    c.pointer("/securityContext/runAsUser")
        .and_then(Value::as_i64)
        .or_else(|| pod_sc.and_then(|sc| sc.get("runAsUser")).and_then(Value::as_i64))
}

fn run_as_group(c: &Value, pod_sc: Option<&Value>) -> Option<i64> {
    c.pointer("/securityContext/runAsGroup")
        .and_then(Value::as_i64)
        .or_else(|| pod_sc.and_then(|sc| sc.get("runAsGroup")).and_then(Value::as_i64))
}

/// One value shared by all items, if there is exactly one.
fn common<T: PartialEq + Copy>(items: impl IntoIterator<Item = Option<T>>) -> Option<T> {
    let mut it = items.into_iter();
    let first = it.next()??;
    it.all(|x| x == Some(first)).then_some(first)
}

/// How the files are made readable by the app and nobody else.
#[derive(Debug, Clone)]
struct Access {
    agent_uid: i64,
    agent_gid: i64,
    /// Every selected container's UID, when the spec names all of them.
    known_uids: Option<Vec<i64>>,
    fs_group: Option<i64>,
    default_mode: u32,
}

impl Access {
    /// Decides who the agent runs as and the default mode (see `docs/security.md`):
    /// with an fsGroup, files are group-readable by it; when every selected
    /// container runs as one known non-root UID, the agent runs as that UID
    /// (so files can be owner-only and signals reach the app); otherwise
    /// files are 0444. Running as the app's UID is safe even with a shared
    /// process namespace because the agent makes itself non-dumpable, which
    /// closes `/proc/<agent>/{root,mem,environ,fd}` to same-UID processes.
    fn decide(selected: &[&Value], pod_sc: Option<&Value>, agent_uid: u32) -> Access {
        let app_uid = common(selected.iter().map(|c| run_as_user(c, pod_sc))).filter(|u| *u > 0);
        let known_uids: Option<Vec<i64>> = selected.iter().map(|c| run_as_user(c, pod_sc)).collect();
        let app_gid = common(selected.iter().map(|c| run_as_group(c, pod_sc))).filter(|g| *g > 0);
        let fs_group = pod_sc.and_then(|sc| sc.get("fsGroup")).and_then(Value::as_i64);
        let agent_uid = match app_uid {
            Some(u) => u,
            _ => i64::from(agent_uid),
        };
        let same_uid = app_uid == Some(agent_uid);
        let agent_gid = fs_group.or(if same_uid { app_gid } else { None }).unwrap_or(agent_uid);
        let default_mode = if fs_group.is_some() {
            0o440
        } else if same_uid {
            0o400
        } else {
            0o444
        };
        Access { agent_uid, agent_gid, known_uids, fs_group, default_mode }
    }

    /// Whether the app can read a file of `mode`: `Some(false)` when it
    /// certainly cannot, `None` when the spec does not say who the app is.
    fn app_can_read(&self, mode: u32) -> Option<bool> {
        if mode & 0o004 != 0 || (self.fs_group.is_some() && mode & 0o040 != 0) {
            return Some(true);
        }
        self.known_uids.as_ref().map(|uids| mode & 0o400 != 0 && uids.iter().all(|u| *u == self.agent_uid))
    }
}

/// Every variable `s` expands as `$(VAR)`, read left to right as the
/// kubelet does (`$$` is an escaped `$`, so `$$(VAR)` is no expansion and
/// `$$$(VAR)` is one). One pass, so checking a container's strings costs
/// their length, not their length times the number of variables.
fn expansions(s: &str) -> impl Iterator<Item = &str> {
    let b = s.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i + 1 < b.len() {
            if b[i] != b'$' {
                i += 1;
                continue;
            }
            match b[i + 1] {
                b'$' => i += 2,
                b'(' => {
                    let start = i + 2;
                    match b[start..].iter().position(|&c| c == b')') {
                        Some(len) => {
                            i = start + len + 1;
                            return s.get(start..start + len);
                        }
                        None => return None,
                    }
                }
                _ => i += 1,
            }
        }
        None
    })
}

fn resources_json(config: &InjectorConfig, a: &PodAnnotations) -> Value {
    let r = &config.agent.resources;
    let o = &a.resources;
    json!({
        "requests": {
            "cpu": o.cpu_request.as_ref().unwrap_or(&r.requests.cpu).as_str(),
            "memory": o.memory_request.as_ref().unwrap_or(&r.requests.memory).as_str(),
        },
        "limits": {
            "cpu": o.cpu_limit.as_ref().unwrap_or(&r.limits.cpu).as_str(),
            "memory": o.memory_limit.as_ref().unwrap_or(&r.limits.memory).as_str(),
        },
    })
}

/// The security context of every container sidekey adds: Pod Security
/// `restricted` on its own terms, whatever the pod level says.
fn restricted_security_context(uid: i64, gid: i64) -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "privileged": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "runAsUser": uid,
        "runAsGroup": gid,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// Checks the requested resources against the effective limits (an
/// annotation may lower a limit below the configured request).
fn check_resources(config: &InjectorConfig, a: &PodAnnotations, problems: &mut Vec<Problem>) {
    let r = &config.agent.resources;
    let o = &a.resources;
    for (what, req, lim) in [
        ("cpu", o.cpu_request.as_ref().unwrap_or(&r.requests.cpu), o.cpu_limit.as_ref().unwrap_or(&r.limits.cpu)),
        (
            "memory",
            o.memory_request.as_ref().unwrap_or(&r.requests.memory),
            o.memory_limit.as_ref().unwrap_or(&r.limits.memory),
        ),
    ] {
        if req > lim {
            let key = if o.cpu_limit.is_some() && what == "cpu" || o.memory_limit.is_some() && what == "memory" {
                format!("agent-{what}-limit")
            } else {
                format!("agent-{what}-request")
            };
            problems
                .push(Problem::annotation(&key, format!("the agent's {what} request {req} exceeds its limit {lim}")));
        }
    }
}

/// Warnings for env-var secrets in a template that did not opt in: what the
/// webhook adds to its response so that users find what to migrate.
pub fn env_secret_warnings(template: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(spec) = template.get("spec") else { return out };
    for kind in [Kind::Init, Kind::Regular] {
        for c in spec.get(kind.key()).and_then(Value::as_array).into_iter().flatten() {
            let cname = container_name(c);
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                let var = str_at(e, "name").unwrap_or("");
                if str_at(e, "value").is_some_and(is_env_reference) {
                    out.push(format!(
                        "container {cname}: env {var} holds a secret reference but the pod does not opt in, so the app gets the reference text: add the annotation {PREFIX}inject: \"true\""
                    ));
                } else if let Some(secret) = e.pointer("/valueFrom/secretKeyRef/name").and_then(Value::as_str) {
                    out.push(format!(
                        "container {cname}: env {var} exposes Kubernetes Secret {secret} as an env var (visible in /proc, crash dumps and logs): move it to a file with {PREFIX}inject: \"true\" and {PREFIX}map-{secret}"
                    ));
                }
            }
            for e in c.get("envFrom").and_then(Value::as_array).into_iter().flatten() {
                if let Some(secret) = e.pointer("/secretRef/name").and_then(Value::as_str) {
                    out.push(format!(
                        "container {cname}: envFrom exposes every key of Kubernetes Secret {secret} as env vars: move them to files with {PREFIX}inject: \"true\" and {PREFIX}map-{secret}"
                    ));
                }
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
    let a = annotations::parse(template.pointer("/metadata/annotations").and_then(Value::as_object))?;
    if !a.inject {
        return Ok((Outcome::NotOptedIn, Patch(Vec::new())));
    }
    if a.injected {
        return Ok((Outcome::AlreadyInjected, Patch(Vec::new())));
    }
    let mut ops = Ops { base: pointer.to_owned(), ops: Vec::new() };
    let namespace = namespace
        .map(str::to_owned)
        .or_else(|| template.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default();
    let warnings = inject(template, &a, config, &namespace, &mut ops)?;
    Ok((Outcome::Injected { warnings }, Patch(ops.ops)))
}

/// Records JSON Patch operations relative to the template.
struct Ops {
    base: String,
    ops: Vec<PatchOperation>,
}

impl Ops {
    fn path(&self, tokens: &[&str]) -> PointerBuf {
        let mut p = PointerBuf::parse(self.base.as_str()).unwrap_or_default();
        for t in tokens {
            p.push_back(*t);
        }
        p
    }

    fn add(&mut self, tokens: &[&str], value: Value) {
        let path = self.path(tokens);
        self.ops.push(PatchOperation::Add(AddOperation { path, value }));
    }

    /// Records the new state of `key` in `obj`, which had it before or not.
    fn set(&mut self, tokens: &[&str], had: bool, now: Option<&Value>) {
        let path = self.path(tokens);
        match (had, now) {
            (true, Some(v)) => self.ops.push(PatchOperation::Replace(ReplaceOperation { path, value: v.clone() })),
            (false, Some(v)) => self.ops.push(PatchOperation::Add(AddOperation { path, value: v.clone() })),
            (true, None) => self.ops.push(PatchOperation::Remove(RemoveOperation { path })),
            (false, None) => {}
        }
    }

    /// Appends `items` to the array at `tokens`, creating it when absent.
    fn append(&mut self, obj: &mut Map<String, Value>, key: &str, prefix: &[&str], items: Vec<Value>) {
        let mut tokens = prefix.to_vec();
        tokens.push(key);
        match obj.get_mut(key).and_then(Value::as_array_mut) {
            Some(list) => {
                tokens.push("-");
                for item in &items {
                    self.add(&tokens, item.clone());
                }
                list.extend(items);
            }
            None => {
                let v = Value::Array(items);
                self.add(&tokens, v.clone());
                obj.insert(key.to_owned(), v);
            }
        }
    }
}

#[allow(clippy::too_many_lines)]
fn inject(
    pod: &mut Value,
    a: &PodAnnotations,
    config: &InjectorConfig,
    namespace: &str,
    ops: &mut Ops,
) -> Result<Vec<String>, Invalid> {
    let mut problems: Vec<Problem> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let spec_problem = |field: &str, reason: &str| Problem { field: field.into(), reason: reason.into() };

    let Some(spec) = pod.get("spec").and_then(Value::as_object) else {
        return Err(vec![spec_problem("spec", "missing: a pod template needs a spec")].into());
    };
    let Some(regular) = spec.get("containers").and_then(Value::as_array).filter(|c| !c.is_empty()) else {
        return Err(vec![spec_problem("spec.containers", "missing or empty")].into());
    };
    let init: &[Value] = spec.get("initContainers").and_then(Value::as_array).map_or(&[], Vec::as_slice);
    let pod_sc = spec.get("securityContext");
    let share_pid = spec.get("shareProcessNamespace").and_then(Value::as_bool) == Some(true);

    let mount_path = a.mount_path.clone().unwrap_or_else(|| config.defaults.mount_path.clone());
    let env_mode = a.env.unwrap_or(config.defaults.env);
    let lifecycle = a.lifecycle.unwrap_or(config.defaults.lifecycle);
    let on_change = a.on_change.clone().unwrap_or_default();

    // Reserved names.
    for v in spec.get("volumes").and_then(Value::as_array).into_iter().flatten() {
        let name = str_at(v, "name").unwrap_or("");
        if RESERVED_VOLUMES.contains(&name) {
            problems.push(spec_problem(
                &format!("spec.volumes {name}"),
                "this volume name is reserved for sidekey (the pod has no sidekey.dev/status, so it was not injected by sidekey)",
            ));
        }
    }
    let ephemeral: &[Value] = spec.get("ephemeralContainers").and_then(Value::as_array).map_or(&[], Vec::as_slice);
    for c in init.iter().chain(regular) {
        let name = container_name(c);
        if RESERVED_CONTAINERS.contains(&name) {
            problems.push(spec_problem(&format!("container {name}"), "this container name is reserved for sidekey"));
        }
    }
    // The pod's own containers must not mount what only the agent may: the
    // login token, the state, the secrets read-write (a writable mount would
    // let the app plant files and links the agent then acts on). A mount of
    // a volume the pod does not declare yet becomes valid once sidekey adds it.
    for c in init.iter().chain(regular).chain(ephemeral) {
        let name = container_name(c);
        for m in c.get("volumeMounts").and_then(Value::as_array).into_iter().flatten() {
            let volume = str_at(m, "name").unwrap_or("");
            if RESERVED_VOLUMES.contains(&volume) {
                problems.push(spec_problem(
                    &format!("container {name} volumeMounts {volume}"),
                    "this volume is sidekey's: only the agent mounts it (sidekey adds the read-only secrets mount itself; select the container with sidekey.dev/containers)",
                ));
            }
        }
    }

    // Which containers get the mount.
    let all: Vec<(Kind, &Value)> =
        init.iter().map(|c| (Kind::Init, c)).chain(regular.iter().map(|c| (Kind::Regular, c))).collect();
    let selected: BTreeSet<String> = match &a.containers {
        Some(list) => {
            for name in list {
                if !all.iter().any(|(_, c)| container_name(c) == name) {
                    let known: Vec<&str> = all.iter().map(|(_, c)| container_name(c)).collect();
                    problems.push(Problem::annotation(
                        "containers",
                        format!("container {name} does not exist (the pod has: {})", known.join(", ")),
                    ));
                }
            }
            list.iter().cloned().collect()
        }
        None => regular.iter().map(|c| container_name(c).to_owned()).collect(),
    };
    for name in a.commands.keys() {
        if !all.iter().any(|(_, c)| container_name(c) == name) {
            problems.push(Problem::annotation(&format!("command-{name}"), format!("container {name} does not exist")));
        }
    }
    let selected_containers: Vec<&Value> =
        all.iter().filter(|(_, c)| selected.contains(container_name(c))).map(|(_, c)| *c).collect();

    // The mount path must be free in every selected container.
    for c in &selected_containers {
        for m in c.get("volumeMounts").and_then(Value::as_array).into_iter().flatten() {
            let path = str_at(m, "mountPath").unwrap_or("").trim_end_matches('/');
            for (ours, key) in [(mount_path.as_str(), "mount-path"), (BIN_DIR, "env")] {
                if key == "env" && env_mode != EnvMode::Exec {
                    continue;
                }
                if path == ours || path.starts_with(&format!("{ours}/")) {
                    problems.push(Problem::annotation(
                        key,
                        format!(
                            "container {} already mounts {} at {path}, where sidekey mounts its volume",
                            container_name(c),
                            str_at(m, "name").unwrap_or("a volume")
                        ),
                    ));
                }
            }
        }
    }

    if let OnChange::Signal(sig) = &on_change {
        if !share_pid {
            problems.push(Problem::annotation(
                "on-change",
                format!(
                    "signal:{sig} needs spec.shareProcessNamespace: true so the agent can see the app's processes; sidekey does not turn it on for you because it exposes every process of the pod to every container (use an http:// on-change or watch the files instead)"
                ),
            ));
        }
    }

    let access = Access::decide(&selected_containers, pod_sc, config.agent.uid);
    check_resources(config, a, &mut problems);

    // Backend settings.
    let check_backend = |r: &Reference, field: String, problems: &mut Vec<Problem>| {
        if !config.backends.enabled(r.backend()) {
            problems.push(Problem {
                field,
                reason: format!(
                    "the {} backend is disabled in the injector config (backends.{})",
                    r.backend(),
                    r.backend()
                ),
            });
        } else if let Some(reason) = config.policy.refusal(namespace, r) {
            problems.push(Problem { field, reason });
        }
    };
    if let Some(addr) = &a.vault_addr {
        if let Some(reason) = config.vault.http_problem(addr) {
            problems.push(Problem::annotation("vault-addr", reason));
        } else if !config.vault.addr_allowed(addr) {
            problems.push(Problem::annotation(
                "vault-addr",
                "this Vault address is not in the injector's vault.allowedAddrs (an annotation may not choose where a credential is sent)",
            ));
        }
    }

    // Files declared by annotations.
    let mut files = Files::default();
    for (name, s) in &a.secrets {
        check_backend(&s.reference, format!("annotation {PREFIX}secret-{name}"), &mut problems);
        let spec = FileSpec {
            name: name.clone(),
            reference: s.reference.clone(),
            format: s.format,
            template: s.template.clone(),
            mode: s.file_mode.unwrap_or(access.default_mode),
            optional: false,
            dir: false,
        };
        let shareable = spec.effective_format() == Format::Raw && spec.reference.key().is_some();
        if s.file_mode.is_some() {
            files.explicit_mode.insert(name.clone());
        }
        files.add(spec, shareable);
    }
    for (secret, r) in &a.maps {
        check_backend(r, format!("annotation {PREFIX}map-{secret}"), &mut problems);
    }

    // Env vars and envFrom entries that become files, per container.
    let mut migrated: BTreeMap<(usize, usize), Vec<Migrated>> = BTreeMap::new();
    let mut optional_uses: HashMap<String, bool> = HashMap::new();
    let mut used_maps = BTreeSet::new();
    let mut moved = 0usize;
    for (ci, (kind, c)) in all.iter().enumerate() {
        let cname = container_name(c);
        let list_index = match kind {
            Kind::Init => ci,
            Kind::Regular => ci - init.len(),
        };
        let mut entries = Vec::new();
        for (index, e) in c.get("env").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let var = str_at(e, "name").unwrap_or("");
            let field = format!("container {cname}: env {var}");
            let (reference, optional) = if let Some(value) = str_at(e, "value").filter(|v| is_env_reference(v)) {
                match value.parse::<Reference>() {
                    Ok(r) => (r, false),
                    Err(err) => {
                        problems.push(Problem { field, reason: err.to_string() });
                        continue;
                    }
                }
            } else if let Some(skr) = e.pointer("/valueFrom/secretKeyRef") {
                let secret = str_at(skr, "name").unwrap_or("");
                let Some(base) = a.maps.get(secret) else {
                    warnings.push(format!(
                        "container {cname}: env {var} still comes from Kubernetes Secret {secret} (no {PREFIX}map-{secret} annotation), so it stays an env var"
                    ));
                    continue;
                };
                used_maps.insert(secret.to_owned());
                let key = str_at(skr, "key").unwrap_or("");
                // The key joins the mapped reference (`…#<key>`): only the
                // grammar Kubernetes allows for Secret keys, so it can never
                // add `?version-stage=…`, a nested key path or a control
                // character to what the agent reads.
                let key_ok = !key.is_empty()
                    && key.len() <= 253
                    && key != "."
                    && key != ".."
                    && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
                if !key_ok {
                    problems.push(Problem {
                        field,
                        reason: "secretKeyRef.key must be a Kubernetes Secret key (1 to 253 of A-Z a-z 0-9 - _ .)"
                            .into(),
                    });
                    continue;
                }
                (base.with_key(key), skr.get("optional").and_then(Value::as_bool) == Some(true))
            } else {
                continue;
            };
            moved += 1;
            if moved > MAX_MOVED {
                continue;
            }
            check_backend(&reference, field.clone(), &mut problems);
            let canonical = reference.to_string();
            let file = match files.by_ref.get(&canonical) {
                Some(name) => name.clone(),
                None => {
                    let name = env_file_name(var, &reference);
                    if files.has(&name) {
                        problems.push(Problem {
                            field,
                            reason: format!("its file name {name} is taken by a secret annotation"),
                        });
                        continue;
                    }
                    files.add(
                        FileSpec {
                            name: name.clone(),
                            reference,
                            format: None,
                            template: None,
                            mode: access.default_mode,
                            optional,
                            dir: false,
                        },
                        true,
                    );
                    name
                }
            };
            let all_optional = optional_uses.entry(file.clone()).or_insert(true);
            *all_optional &= optional;
            entries.push(Migrated::Var { index, var: var.to_owned(), file });
        }
        for (index, e) in c.get("envFrom").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let Some(secret) = e.pointer("/secretRef/name").and_then(Value::as_str) else { continue };
            let Some(reference) = a.maps.get(secret) else {
                warnings.push(format!(
                    "container {cname}: envFrom still exposes Kubernetes Secret {secret} as env vars (no {PREFIX}map-{secret} annotation)"
                ));
                continue;
            };
            moved += 1;
            if moved > MAX_MOVED {
                continue;
            }
            used_maps.insert(secret.to_owned());
            if a.secrets.contains_key(secret) {
                problems.push(Problem::annotation(
                    &format!("map-{secret}"),
                    format!("the directory {secret} for envFrom would clash with the file of {PREFIX}secret-{secret}"),
                ));
                continue;
            }
            let optional = e.pointer("/secretRef/optional").and_then(Value::as_bool) == Some(true);
            if files.get_mut(secret).is_none() {
                files.add(
                    FileSpec {
                        name: secret.to_owned(),
                        reference: reference.clone(),
                        format: None,
                        template: None,
                        mode: access.default_mode,
                        optional,
                        dir: true,
                    },
                    false,
                );
            }
            let all_optional = optional_uses.entry(secret.to_owned()).or_insert(true);
            *all_optional &= optional;
            let prefix = str_at(e, "prefix").unwrap_or("").to_owned();
            if env_mode == EnvMode::File {
                warnings.push(format!(
                    "container {cname}: the keys of {secret} are files in {mount_path}/{secret}/ (env file mode cannot name them in advance; use {PREFIX}env: exec to get them as env vars)"
                ));
            }
            entries.push(Migrated::Dir { index, dir: secret.to_owned(), prefix });
        }
        if !entries.is_empty() {
            if !selected.contains(cname) {
                problems.push(Problem {
                    field: format!("container {cname}"),
                    reason: format!(
                        "has env-var secrets but does not get the secrets volume: add it to {PREFIX}containers"
                    ),
                });
            }
            let kind_index = match kind {
                Kind::Init => 0,
                Kind::Regular => 1,
            };
            migrated.insert((kind_index, list_index), entries);
        }
    }
    if moved > MAX_MOVED {
        problems.push(Problem {
            field: "pod".into(),
            reason: format!(
                "{moved} env vars and envFrom entries are secrets to move to files; sidekey moves at most {MAX_MOVED} per pod"
            ),
        });
    }
    for (name, optional) in optional_uses {
        if let Some(f) = files.get_mut(&name) {
            f.optional = optional;
        }
    }
    for secret in a.maps.keys() {
        if !used_maps.contains(secret) {
            warnings.push(format!(
                "annotation {PREFIX}map-{secret}: no secretKeyRef or envFrom in the pod uses Kubernetes Secret {secret}"
            ));
        }
    }

    // Modes: explicit ones must let the app read; implicit 0444 gets a warning.
    for f in &files.specs {
        match access.app_can_read(f.mode) {
            Some(false) if files.explicit_mode.contains(&f.name) => problems.push(Problem::annotation(
                &format!("file-mode-{}", f.name),
                format!(
                    "mode {:04o} does not let every selected container read the file (they run as UID {}; the agent writes it as UID {} group {}); use 0440 with a pod fsGroup, or 0444",
                    f.mode,
                    access.known_uids.iter().flatten().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                    access.agent_uid,
                    access.agent_gid
                ),
            )),
            None if files.explicit_mode.contains(&f.name) && f.mode & 0o004 == 0 => warnings.push(format!(
                "annotation {PREFIX}file-mode-{}: with mode {:04o} the app can read the file only if it runs as UID {} or in group {}; set runAsUser or fsGroup in the pod spec so sidekey can check",
                f.name, f.mode, access.agent_uid, access.agent_gid
            )),
            _ => {}
        }
    }
    if access.default_mode == 0o444 && files.specs.iter().any(|f| !files.explicit_mode.contains(&f.name)) {
        warnings.push(
            "secret files are readable by every container of the pod (mode 0444) because the pod has no fsGroup and its selected containers do not all run as one known non-root UID; set spec.securityContext.fsGroup (or runAsUser) to restrict them to the app".into(),
        );
    }

    // $(VAR) expansion of a removed variable would silently break.
    for ((kind_index, list_index), entries) in &migrated {
        let list = if *kind_index == 0 { init } else { regular.as_slice() };
        let c = &list[*list_index];
        let cname = container_name(c);
        let removed: BTreeSet<usize> = entries
            .iter()
            .filter_map(|m| match m {
                Migrated::Var { index, .. } => Some(*index),
                Migrated::Dir { .. } => None,
            })
            .collect();
        // Where each variable is expanded, from one pass over the strings.
        let mut expanded: HashMap<&str, Vec<String>> = HashMap::new();
        for key in ["command", "args"] {
            for text in c.get(key).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                for var in expansions(text) {
                    let uses = expanded.entry(var).or_default();
                    if uses.last().is_none_or(|u| u != key) {
                        uses.push(key.to_owned());
                    }
                }
            }
        }
        for (i, e) in c.get("env").and_then(Value::as_array).into_iter().flatten().enumerate() {
            if removed.contains(&i) {
                continue;
            }
            for var in str_at(e, "value").into_iter().flat_map(expansions) {
                expanded.entry(var).or_default().push(format!("env {}", str_at(e, "name").unwrap_or("")));
            }
        }
        for m in entries {
            let Migrated::Var { var, .. } = m else { continue };
            let uses = expanded.get(var.as_str()).cloned().unwrap_or_default();
            if !uses.is_empty() {
                problems.push(Problem {
                    field: format!("container {cname}: env {var}"),
                    reason: format!(
                        "is used as $({var}) in {}, which would silently expand to nothing once the secret leaves the env; read {var}_FILE instead",
                        uses.join(", ")
                    ),
                });
            }
        }
        if env_mode == EnvMode::File {
            let existing: BTreeSet<&str> = c
                .get("env")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|e| str_at(e, "name"))
                .collect();
            for m in entries {
                if let Migrated::Var { var, .. } = m {
                    let file_var = format!("{var}_FILE");
                    if existing.contains(file_var.as_str()) {
                        problems.push(Problem {
                            field: format!("container {cname}: env {var}"),
                            reason: format!(
                                "{file_var} is already set in the container, so sidekey cannot point it at the file"
                            ),
                        });
                    }
                }
            }
        }
        if env_mode == EnvMode::Exec
            && c.get("command").and_then(Value::as_array).is_none_or(Vec::is_empty)
            && !a.commands.contains_key(cname)
        {
            problems.push(Problem {
                field: format!("container {cname}"),
                reason: format!(
                    "env exec wraps the container's command, but the spec has none: set command in the container or the annotation {PREFIX}command-{cname} to the image's entrypoint (sidekey makes no registry calls at admission)"
                ),
            });
        }
    }

    // Vault and AWS settings in the agent config.
    let backends: BTreeSet<Backend> = files.specs.iter().map(|f| f.reference.backend()).collect();
    let service_account =
        spec.get("serviceAccountName").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("default");
    let vault = backends.contains(&Backend::Vault).then(|| VaultConfig {
        addr: a.vault_addr.clone().unwrap_or_else(|| config.vault.addr.clone()),
        namespace: a.vault_namespace.clone().or_else(|| config.vault.namespace.clone()),
        auth: VaultAuth::Kubernetes {
            mount: a.vault_auth_mount.clone().unwrap_or_else(|| config.vault.auth_mount.clone()),
            role: a
                .vault_role
                .clone()
                .or_else(|| config.vault.role.clone())
                .unwrap_or_else(|| service_account.to_owned()),
            token_path: format!("{TOKEN_DIR}/token"),
        },
        ca_cert: None,
        ca_pem: config.vault.ca_cert.clone(),
        // When the pod ends its credentials are of no use to anyone: revoke
        // them rather than leave them valid for the rest of their TTL. Only a
        // native sidecar stops after the app has.
        revoke_on_shutdown: lifecycle == Lifecycle::Sidecar
            && a.revoke_on_shutdown.unwrap_or(config.vault.revoke_on_shutdown),
    });
    let aws = backends.contains(&Backend::Aws).then(|| AwsConfig {
        region: a.aws_region.clone().or_else(|| config.aws.region.clone()),
        role_arn: a.aws_role_arn.clone(),
        endpoint: config.aws.endpoint.clone(),
    });

    if !problems.is_empty() {
        return Err(problems.into());
    }
    if files.specs.is_empty() {
        warnings.push(format!(
            "the pod opts in but references no secret (no {PREFIX}secret-*, no reference-valued env var, no mapped Secret in use)"
        ));
    }

    // A restarted agent adopts its token and leases instead of issuing new
    // credentials; only Vault has either, and only a long-running agent
    // restarts (the legacy one-shot init hands them to the agent).
    let keeps_state = vault.is_some() && lifecycle != Lifecycle::InitOnly;
    let agent_config = AgentConfig {
        mount_path: mount_path.clone(),
        state_dir: keeps_state.then(|| STATE_DIR.to_owned()),
        lifecycle,
        refresh: a.refresh.unwrap_or(config.defaults.refresh),
        startup_timeout: config.agent.startup_timeout,
        on_change,
        files: files.specs,
        vault,
        aws,
        metrics_addr: None,
    };
    let uses_vault = agent_config.vault.is_some();
    let exec_used = env_mode == EnvMode::Exec && !migrated.is_empty();

    // --- From here on nothing can fail: apply, recording the patch. ---
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Err(vec![spec_problem("spec", "missing")].into());
    };

    // Env rewrite in each container with migrated entries.
    for ((kind_index, list_index), entries) in &migrated {
        let key = if *kind_index == 0 { "initContainers" } else { "containers" };
        let Some(c) = spec.get_mut(key).and_then(|l| l.get_mut(*list_index)).and_then(Value::as_object_mut) else {
            continue;
        };
        let had: Vec<bool> = ["env", "envFrom", "command"].iter().map(|k| c.contains_key(*k)).collect();
        rewrite_env(c, entries, env_mode, &mount_path, a);
        let index = list_index.to_string();
        for (k, had) in ["env", "envFrom", "command"].iter().zip(had) {
            ops.set(&["spec", key, &index, k], had, c.get(*k));
        }
    }

    // App mounts.
    for key in ["initContainers", "containers"] {
        for (i, c) in spec.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten().enumerate() {
            let name = container_name(c).to_owned();
            let Some(obj) = c.as_object_mut() else { continue };
            let mut mounts = Vec::new();
            if selected.contains(&name) {
                mounts.push(json!({"name": SECRETS_VOLUME, "mountPath": mount_path, "readOnly": true}));
            }
            if exec_used
                && obj.get("command").and_then(Value::as_array).and_then(|c| c.first()).and_then(Value::as_str)
                    == Some(&format!("{BIN_DIR}/sidekey-agent"))
            {
                mounts.push(json!({"name": BIN_VOLUME, "mountPath": BIN_DIR, "readOnly": true}));
            }
            if !mounts.is_empty() {
                ops.append(obj, "volumeMounts", &["spec", key, &i.to_string()], mounts);
            }
        }
    }

    // Volumes.
    let mut volumes = vec![json!({
        "name": SECRETS_VOLUME,
        "emptyDir": {"medium": "Memory", "sizeLimit": config.defaults.volume_size_limit.as_str()},
    })];
    if uses_vault {
        volumes.push(json!({
            "name": TOKEN_VOLUME,
            "projected": {"sources": [{"serviceAccountToken": {
                "audience": config.vault.audience,
                "expirationSeconds": config.vault.token_expiration_seconds,
                "path": "token",
            }}]},
        }));
    }
    if exec_used {
        volumes.push(json!({"name": BIN_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}));
    }
    if keeps_state {
        volumes.push(json!({"name": STATE_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}));
    }
    ops.append(spec, "volumes", &["spec"], volumes);

    // The agent.
    let config_json = agent_config.to_json();
    let resources = resources_json(config, a);
    let security_context = restricted_security_context(access.agent_uid, access.agent_gid);
    let agent = |name: &str, args: &[&str]| -> Map<String, Value> {
        let mut mounts = vec![json!({"name": SECRETS_VOLUME, "mountPath": mount_path})];
        if uses_vault {
            mounts.push(json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}));
        }
        if keeps_state {
            mounts.push(json!({"name": STATE_VOLUME, "mountPath": STATE_DIR}));
        }
        let v = json!({
            "name": name,
            "image": config.agent.image,
            "imagePullPolicy": config.agent.image_pull_policy,
            "args": args,
            "env": [
                {"name": agent_config::ENV_VAR, "value": config_json},
                {"name": "SIDEKEY_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "SIDEKEY_POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            ],
            "resources": resources,
            "securityContext": security_context,
            "volumeMounts": mounts,
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    };
    let mut new_init: Vec<Value> = Vec::new();
    match lifecycle {
        Lifecycle::Sidecar => {
            let mut c = agent(AGENT_CONTAINER, &["run"]);
            c.insert("restartPolicy".into(), json!("Always"));
            let threshold = config.agent.startup_timeout.as_secs().max(1);
            c.insert(
                "startupProbe".into(),
                json!({"exec": {"command": [AGENT_BINARY, "ready"]}, "periodSeconds": 1, "failureThreshold": threshold}),
            );
            new_init.push(Value::Object(c));
        }
        Lifecycle::InitOnly => new_init.push(Value::Object(agent(AGENT_CONTAINER, &["run", "--once"]))),
        Lifecycle::Legacy => new_init.push(Value::Object(agent(INIT_CONTAINER, &["run", "--once"]))),
    }
    if exec_used {
        new_init.push(json!({
            "name": INSTALL_CONTAINER,
            "image": config.agent.image,
            "imagePullPolicy": config.agent.image_pull_policy,
            "args": ["install", format!("{BIN_DIR}/sidekey-agent")],
            "resources": resources,
            "securityContext": security_context,
            "volumeMounts": [{"name": BIN_VOLUME, "mountPath": BIN_DIR}],
        }));
    }
    // After the pod's leading native sidecars (a mesh proxy must be up before
    // the agent can reach Vault), before any init container that is ordinary
    // or needs the secrets.
    match spec.get_mut("initContainers").and_then(Value::as_array_mut) {
        Some(list) => {
            let at = list
                .iter()
                .position(|c| str_at(c, "restartPolicy") != Some("Always") || selected.contains(container_name(c)))
                .unwrap_or(list.len());
            for (k, c) in new_init.iter().enumerate() {
                ops.add(&["spec", "initContainers", &(at + k).to_string()], c.clone());
            }
            list.splice(at..at, new_init);
        }
        None => ops.append(spec, "initContainers", &["spec"], new_init),
    }
    if lifecycle == Lifecycle::Legacy {
        ops.append(spec, "containers", &["spec"], vec![Value::Object(agent(AGENT_CONTAINER, &["run"]))]);
    }

    // Status.
    if let Some(ann) = pod.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        let key = format!("{PREFIX}status");
        ops.add(&["metadata", "annotations", &key], json!(STATUS_INJECTED));
        ann.insert(key, json!(STATUS_INJECTED));
    }
    Ok(warnings)
}

fn rewrite_env(c: &mut Map<String, Value>, entries: &[Migrated], mode: EnvMode, mount_path: &str, a: &PodAnnotations) {
    let mut var_files: BTreeMap<usize, (String, String)> = BTreeMap::new();
    let mut dirs: BTreeMap<usize, (String, String)> = BTreeMap::new();
    for m in entries {
        match m {
            Migrated::Var { index, var, file } => {
                var_files.insert(*index, (var.clone(), format!("{mount_path}/{file}")));
            }
            Migrated::Dir { index, dir, prefix } => {
                dirs.insert(*index, (format!("{mount_path}/{dir}"), prefix.clone()));
            }
        }
    }
    if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
        let old = std::mem::take(env);
        for (i, e) in old.into_iter().enumerate() {
            match var_files.get(&i) {
                None => env.push(e),
                Some((var, path)) if mode == EnvMode::File => {
                    env.push(json!({"name": format!("{var}_FILE"), "value": path}))
                }
                Some(_) => {}
            }
        }
        if env.is_empty() {
            c.remove("env");
        }
    }
    if let Some(env_from) = c.get_mut("envFrom").and_then(Value::as_array_mut) {
        let old = std::mem::take(env_from);
        env_from.extend(old.into_iter().enumerate().filter(|(i, _)| !dirs.contains_key(i)).map(|(_, e)| e));
        if env_from.is_empty() {
            c.remove("envFrom");
        }
    }
    if mode == EnvMode::Exec {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
        let original: Vec<Value> = match c.get("command").and_then(Value::as_array).filter(|c| !c.is_empty()) {
            Some(cmd) => cmd.clone(),
            None => a.commands.get(&name).into_iter().flatten().map(|s| json!(s)).collect(),
        };
        let mut cmd = vec![json!(format!("{BIN_DIR}/sidekey-agent")), json!("exec")];
        // With on-change, env-only apps are restarted when their secrets
        // change (the value in a process's environment cannot change).
        // Options and their values as one token each (`--env=VAR=FILE`): a
        // variable named like an option (`--restart-on-change` is a valid env
        // var name) must stay a value, never become a flag of the wrapper.
        if a.on_change.as_ref().is_some_and(|o| *o != OnChange::None) {
            cmd.push(json!(format!("--restart-on-change={mount_path}")));
        }
        for (var, path) in var_files.values() {
            cmd.push(json!(format!("--env={var}={path}")));
        }
        for (dir, prefix) in dirs.values() {
            cmd.push(json!(if prefix.is_empty() {
                format!("--env-dir={dir}")
            } else {
                format!("--env-dir={dir}:{prefix}")
            }));
        }
        cmd.push(json!("--"));
        cmd.extend(original);
        c.insert("command".into(), Value::Array(cmd));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotations: Value, spec: Value) -> Value {
        json!({"metadata": {"annotations": annotations}, "spec": spec})
    }

    fn run(mut p: Value) -> (Value, Vec<String>) {
        match mutate_template(&mut p, &InjectorConfig::default()) {
            Ok(Outcome::Injected { warnings }) => (p, warnings),
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
        assert!(
            app["volumeMounts"].as_array().unwrap().iter().any(|m| m["name"] == BIN_VOLUME && m["readOnly"] == true)
        );
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
        let spec =
            json!({"containers": [{"name": "app", "image": "x", "env": [{"name": "PW", "value": "vault:a/b#c"}]}]});
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
            assert!(
                e.iter().any(|p| p.contains("PW") && p.contains("must be a Kubernetes Secret key")),
                "{key:?}: {e:?}"
            );
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
            let env: Vec<Value> = (0..n)
                .map(|i| json!({"name": format!("S{i}"), "value": format!("vault:secret/data/app#k{i}")}))
                .collect();
            pod(
                json!({"sidekey.dev/inject": "true"}),
                json!({"containers": [{"name": "app", "image": "x", "env": env}]}),
            )
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
        let agent =
            p["spec"]["initContainers"].as_array().unwrap().iter().find(|c| c["name"] == "sidekey-agent").unwrap();
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
        assert!(w[0].contains("env T") && w[1].contains("Secret s") && w[2].contains("Secret e"));
    }
}
