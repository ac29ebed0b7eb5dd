//! The first step of the mutation: read the pod and the annotations, run
//! every check, and decide everything the second step writes. Problems are
//! collected, not returned at the first, so a user fixes a pod in one round.
//! The checks run in a fixed order, which is the order of the problems and
//! warnings in the answer.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value};

use super::{
    AGENT_CONTAINER, BIN_DIR, BIN_VOLUME, INIT_CONTAINER, INSTALL_CONTAINER, Invalid, MAX_MOVED, SECRETS_VOLUME,
    STATE_DIR, STATE_VOLUME, TOKEN_DIR, TOKEN_VOLUME, Warning, env_file_name,
};
use crate::PREFIX;
use crate::agent_config::{AgentConfig, AwsConfig, FileSpec, VaultAuth, VaultConfig, system_path};
use crate::annotations::{EnvMode, Format, Key, Lifecycle, Named, OnChange, PodAnnotations, Problem};
use crate::config::{AuthMethod, InjectorConfig, MetricsListen, expand_role};
use crate::pod::{Container, EnvFromSource, EnvSource, Kind, PodSpec, SecretKeyRef};
use crate::reference::{Backend, Reference, is_env_reference};

/// The most distinct `secret`/`pkiCert` calls of all a pod's templates.
pub const MAX_TEMPLATE_CALLS: usize = 200;

const RESERVED_VOLUMES: [&str; 4] = [SECRETS_VOLUME, TOKEN_VOLUME, BIN_VOLUME, STATE_VOLUME];
const RESERVED_CONTAINERS: [&str; 3] = [AGENT_CONTAINER, INIT_CONTAINER, INSTALL_CONTAINER];

/// Everything the apply step writes, decided.
#[derive(Debug)]
pub(super) struct Plan {
    /// Where the secrets volume is mounted.
    pub mount_path: String,
    /// What becomes of env vars that move to files.
    pub env_mode: EnvMode,
    /// How the agent runs.
    pub lifecycle: Lifecycle,
    /// The containers that get the secrets volume.
    pub selected: BTreeSet<String>,
    /// Per container (list and index) with env entries to move, those entries.
    pub migrated: BTreeMap<(Kind, usize), Vec<Migrated>>,
    /// Who the agent runs as.
    pub access: Access,
    /// What the agent is told.
    pub agent_config: AgentConfig,
    /// Whether the agent keeps its token and leases across its restarts.
    pub keeps_state: bool,
    /// Whether the `exec` wrapper is installed.
    pub exec_used: bool,
    /// For the user, in the answer.
    pub warnings: Vec<Warning>,
}

/// An env var (or `envFrom` entry) that becomes a file.
#[derive(Debug, Clone)]
pub(super) enum Migrated {
    /// `env[index]` named `var` becomes the file `file`.
    Var { index: usize, var: String, file: String },
    /// `envFrom[index]` becomes the directory `dir`, its variables named with `prefix`.
    Dir { index: usize, dir: String, prefix: String },
}

/// How the files are made readable by the app and nobody else.
#[derive(Debug, Clone)]
pub(super) struct Access {
    pub agent_uid: i64,
    pub agent_gid: i64,
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
    fn decide(selected: &[Container<'_>], fs_group: Option<i64>, agent_uid: u32) -> Access {
        let app_uid = common(selected.iter().map(Container::run_as_user)).filter(|u| *u > 0);
        let known_uids: Option<Vec<i64>> = selected.iter().map(Container::run_as_user).collect();
        let app_gid = common(selected.iter().map(Container::run_as_group)).filter(|g| *g > 0);
        let agent_uid = app_uid.unwrap_or(i64::from(agent_uid));
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

/// One value shared by all items, if there is exactly one.
fn common<T: PartialEq + Copy>(items: impl IntoIterator<Item = Option<T>>) -> Option<T> {
    let mut it = items.into_iter();
    let first = it.next()??;
    it.all(|x| x == Some(first)).then_some(first)
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

    /// A file for an env var or `envFrom` entry, readable by the app.
    fn add_moved(&mut self, name: String, reference: Reference, mode: u32, optional: bool, dir: bool) {
        let spec = FileSpec {
            name,
            reference,
            format: None,
            template: None,
            delims: None,
            missing_key_error: false,
            mode,
            optional,
            dir,
            cert: None,
        };
        self.add(spec, !dir);
    }
}

/// Every variable `s` expands as `$(VAR)`, read left to right as the
/// kubelet does (`$$` is an escaped `$`, so `$$(VAR)` is no expansion and
/// `$$$(VAR)` is one). One pass, so checking a container's strings costs
/// their length, not their length times the number of variables.
pub(super) fn expansions(s: &str) -> impl Iterator<Item = &str> {
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

/// The key of a `secretKeyRef` joins the mapped reference (`…#<key>`): only
/// the grammar Kubernetes allows for Secret keys, so it can never add
/// `?version-stage=…`, a nested key path or a control character to what the
/// agent reads.
fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key != "."
        && key != ".."
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

/// The checks' shared inputs and what they collect.
struct Planner<'a> {
    pod: PodSpec<'a>,
    a: &'a PodAnnotations,
    config: &'a InjectorConfig,
    namespace: &'a str,
    mount_path: String,
    env_mode: EnvMode,
    problems: Vec<Problem>,
    warnings: Vec<Warning>,
}

/// Reads `spec` (a pod spec object) and the parsed annotations `a` and
/// decides the mutation, or returns every problem.
pub(super) fn plan(
    spec: &Map<String, Value>,
    a: &PodAnnotations,
    config: &InjectorConfig,
    namespace: &str,
) -> Result<Plan, Invalid> {
    let pod = PodSpec::of_map(spec);
    if pod.list(Kind::Regular).is_empty() {
        return Err(vec![Problem { field: "spec.containers".into(), reason: "missing or empty".into() }].into());
    }
    let mut p = Planner {
        pod,
        a,
        config,
        namespace,
        mount_path: a.mount_path.clone().unwrap_or_else(|| config.defaults.mount_path.clone()),
        env_mode: a.env.unwrap_or(config.defaults.env),
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let lifecycle = a.lifecycle.unwrap_or(config.defaults.lifecycle);
    let on_change = a.on_change.clone().unwrap_or_default();

    p.check_reserved_names();
    p.check_reserved_mounts();
    let selected = p.select_containers();
    let selected_containers: Vec<Container<'_>> =
        pod.app_containers().filter(|c| selected.contains(c.name())).collect();
    p.check_mount_paths(&selected_containers);
    p.check_on_change(&on_change);
    let access = Access::decide(&selected_containers, pod.fs_group(), config.agent.uid);
    p.check_resources();
    p.check_vault_addr();
    p.check_login_overrides();
    let mut files = p.declared_files(&access);
    let migrated = p.move_env(&selected, &access, &mut files);
    p.check_modes(&files, &access);
    for ((kind, index), entries) in &migrated {
        if let Some(c) = pod.container(*kind, *index) {
            p.check_expansions(&c, entries);
            p.check_file_vars(&c, entries);
            p.check_exec_command(&c);
        }
    }
    let backends: BTreeSet<Backend> = files.specs.iter().map(|f| f.reference.backend()).collect();
    let vault = backends.contains(&Backend::Vault).then(|| p.vault_config(lifecycle));
    let aws = backends.contains(&Backend::Aws).then(|| AwsConfig {
        region: a.aws_region.clone().or_else(|| config.aws.region.clone()),
        role_arn: a.aws_role_arn.clone(),
        endpoint: config.aws.endpoint.clone(),
    });
    let Planner { problems, mut warnings, mount_path, env_mode, .. } = p;
    if !problems.is_empty() {
        return Err(problems.into());
    }
    if files.specs.is_empty() {
        warnings.push(Warning::NoSecret);
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
        metrics_addr: config.agent.metrics_port.map(|p| match config.agent.metrics_listen {
            MetricsListen::Loopback => format!("127.0.0.1:{p}"),
            MetricsListen::PodIp => format!("0.0.0.0:{p}"),
        }),
    };
    let exec_used = env_mode == EnvMode::Exec && !migrated.is_empty();
    Ok(Plan {
        mount_path,
        env_mode,
        lifecycle,
        selected,
        migrated,
        access,
        agent_config,
        keeps_state,
        exec_used,
        warnings,
    })
}

impl Planner<'_> {
    fn problem(&mut self, field: String, reason: impl Into<String>) {
        self.problems.push(Problem { field, reason: reason.into() });
    }

    fn annotation_problem(&mut self, key: &str, reason: impl Into<String>) {
        self.problems.push(Problem::annotation(key, reason));
    }

    /// Volumes and containers named like sidekey's, in a pod sidekey did not inject.
    fn check_reserved_names(&mut self) {
        for (name, _) in self.pod.volumes() {
            if RESERVED_VOLUMES.contains(&name) {
                self.problem(
                    format!("spec.volumes {name}"),
                    "this volume name is reserved for sidekey (the pod has no sidekey.dev/status, so it was not injected by sidekey)",
                );
            }
        }
        for c in self.pod.app_containers() {
            let name = c.name();
            if RESERVED_CONTAINERS.contains(&name) {
                self.problem(format!("container {name}"), "this container name is reserved for sidekey");
            }
        }
    }

    /// The pod's own containers must not mount what only the agent may: the
    /// login token, the state, the secrets read-write (a writable mount would
    /// let the app plant files and links the agent then acts on). A mount of
    /// a volume the pod does not declare yet becomes valid once sidekey adds it.
    fn check_reserved_mounts(&mut self) {
        for c in self.pod.all_containers() {
            for (volume, _) in c.volume_mounts() {
                if RESERVED_VOLUMES.contains(&volume) {
                    self.problem(
                        format!("container {} volumeMounts {volume}", c.name()),
                        "this volume is sidekey's: only the agent mounts it (sidekey adds the read-only secrets mount itself; select the container with sidekey.dev/containers)",
                    );
                }
            }
        }
    }

    /// The containers that get the mount: `sidekey.dev/containers`, or every
    /// regular container. Names in annotations must exist.
    fn select_containers(&mut self) -> BTreeSet<String> {
        let exists = |name: &str| self.pod.app_containers().any(|c| c.name() == name);
        let mut problems = Vec::new();
        let selected = match &self.a.containers {
            Some(list) => {
                for name in list.iter().filter(|n| !exists(n)) {
                    let known: Vec<&str> = self.pod.app_containers().map(|c| c.name()).collect();
                    problems.push(Problem::annotation(
                        Key::Containers.name(),
                        format!("container {name} does not exist (the pod has: {})", known.join(", ")),
                    ));
                }
                list.iter().cloned().collect()
            }
            None => self.pod.containers(&[Kind::Regular]).map(|c| c.name().to_owned()).collect(),
        };
        for name in self.a.commands.keys().filter(|n| !exists(n)) {
            problems.push(Problem::annotation(&Named::Command.name(name), format!("container {name} does not exist")));
        }
        self.problems.extend(problems);
        selected
    }

    /// The mount path (and `/sidekey/bin` for `env: exec`) must be free in
    /// every selected container.
    fn check_mount_paths(&mut self, selected: &[Container<'_>]) {
        let mut ours = vec![(self.mount_path.clone(), Key::MountPath)];
        if self.env_mode == EnvMode::Exec {
            ours.push((BIN_DIR.to_owned(), Key::Env));
        }
        for c in selected {
            for m in c.field("volumeMounts").and_then(Value::as_array).into_iter().flatten() {
                let path = m.get("mountPath").and_then(Value::as_str).unwrap_or("").trim_end_matches('/');
                for (dir, key) in &ours {
                    if path == dir || path.strip_prefix(dir.as_str()).is_some_and(|rest| rest.starts_with('/')) {
                        let volume = m.get("name").and_then(Value::as_str).unwrap_or("a volume");
                        self.annotation_problem(
                            key.name(),
                            format!(
                                "container {} already mounts {volume} at {path}, where sidekey mounts its volume",
                                c.name()
                            ),
                        );
                    }
                }
            }
        }
    }

    /// A signal reaches the app only with a shared process namespace.
    fn check_on_change(&mut self, on_change: &OnChange) {
        if let OnChange::Signal(sig) = on_change
            && !self.pod.is_true("shareProcessNamespace")
        {
            self.annotation_problem(
                Key::OnChange.name(),
                format!(
                    "signal:{sig} needs spec.shareProcessNamespace: true so the agent can see the app's processes; sidekey does not turn it on for you because it exposes every process of the pod to every container (use an http:// on-change or watch the files instead)"
                ),
            );
        }
    }

    /// The agent's requests against its effective limits (an annotation
    /// may lower a limit below the configured request).
    fn check_resources(&mut self) {
        let r = &self.config.agent.resources;
        let o = &self.a.resources;
        let cpu = (o.cpu_request.as_ref().unwrap_or(&r.requests.cpu), o.cpu_limit.as_ref().unwrap_or(&r.limits.cpu));
        let memory = (
            o.memory_request.as_ref().unwrap_or(&r.requests.memory),
            o.memory_limit.as_ref().unwrap_or(&r.limits.memory),
        );
        let cpu_key = if o.cpu_limit.is_some() { Key::AgentCpuLimit } else { Key::AgentCpuRequest };
        let memory_key = if o.memory_limit.is_some() { Key::AgentMemoryLimit } else { Key::AgentMemoryRequest };
        for (what, (req, lim), key) in [("cpu", cpu, cpu_key), ("memory", memory, memory_key)] {
            if req > lim {
                self.annotation_problem(
                    key.name(),
                    format!("the agent's {what} request {req} exceeds its limit {lim}"),
                );
            }
        }
    }

    /// An annotation may not choose where a credential is sent.
    fn check_vault_addr(&mut self) {
        let Some(addr) = &self.a.vault_addr else { return };
        if let Some(reason) = self.config.vault.http_problem(addr) {
            self.annotation_problem(Key::VaultAddr.name(), reason);
        } else if !self.config.vault.addr_allowed(addr) {
            self.annotation_problem(
                Key::VaultAddr.name(),
                "this Vault address is not in the injector's vault.allowedAddrs (an annotation may not choose where a credential is sent)",
            );
        }
    }

    /// The Vault login comes from the cluster's defaults where the policy
    /// says so: a pod may choose only the settings its namespace's rule
    /// lists in `overrides`.
    fn check_login_overrides(&mut self) {
        let a = self.a;
        let set = [
            (Key::VaultRole, a.vault_role.is_some()),
            (Key::VaultAuthMethod, a.vault_auth_method.is_some()),
            (Key::VaultAuthMount, a.vault_auth_mount.is_some()),
            (Key::VaultNamespace, a.vault_namespace.is_some()),
            (Key::VaultAuthNamespace, a.vault_auth_namespace.is_some()),
        ];
        for (key, _) in set.into_iter().filter(|(_, s)| *s) {
            if let Some(reason) = self.config.policy.override_refusal(self.namespace, key.name()) {
                self.annotation_problem(key.name(), reason);
            }
        }
    }

    /// A reference's backend must be enabled and allowed for the namespace.
    fn check_backend(&mut self, r: &Reference, field: String) {
        if !self.config.backends.enabled(r.backend()) {
            let reason =
                format!("the {} backend is disabled in the injector config (backends.{})", r.backend(), r.backend());
            self.problem(field, reason);
        } else if let Some(reason) = self.config.policy.refusal(self.namespace, r) {
            self.problem(field, reason);
        }
    }

    /// Every call of every Go template is a request the agent makes with
    /// its token: each is checked against the namespace policy as a
    /// reference is (a write only by the rule's `writes`), and their number
    /// is bounded per pod.
    fn check_template_calls(&mut self) {
        let mut distinct = std::collections::HashSet::new();
        for (name, s) in &self.a.secrets {
            let field = format!("annotation {PREFIX}{}", Named::Template.name(name));
            for call in &s.calls {
                if let Some(reason) = self.config.policy.template_refusal(self.namespace, call) {
                    self.problem(field.clone(), reason);
                }
                distinct.insert(call);
            }
        }
        if distinct.len() > MAX_TEMPLATE_CALLS {
            self.problem(
                format!("metadata.annotations {PREFIX}template-*"),
                format!(
                    "the templates make {} distinct secret calls; at most {MAX_TEMPLATE_CALLS} per pod (each is a request the agent sends)",
                    distinct.len()
                ),
            );
        }
    }

    /// The files `sidekey.dev/secret-*` declare; the backends of the
    /// mapped Secrets.
    fn declared_files(&mut self, access: &Access) -> Files {
        let mut files = Files::default();
        self.check_template_calls();
        for (name, s) in &self.a.secrets {
            self.check_backend(&s.reference, format!("annotation {PREFIX}secret-{name}"));
            let spec = FileSpec {
                name: name.clone(),
                reference: s.reference.clone(),
                format: s.format,
                template: s.template.clone(),
                delims: s.delims.clone(),
                missing_key_error: s.missing_key_error,
                mode: s.file_mode.unwrap_or(access.default_mode),
                optional: false,
                dir: false,
                cert: None,
            };
            let shareable = spec.effective_format() == Format::Raw && spec.reference.key().is_some();
            if s.file_mode.is_some() {
                files.explicit_mode.insert(name.clone());
            }
            files.add(spec, shareable);
        }
        for (name, cert) in &self.a.certs {
            let field = format!("annotation {PREFIX}{}", Named::Cert.name(name));
            let Ok(reference) = format!("vault:{}", cert.path()).parse::<Reference>() else {
                self.problem(field, format!("{} is not a Vault path", cert.path()));
                continue;
            };
            self.check_backend(&reference, field.clone());
            if files.has(name) {
                self.problem(field, format!("the name {name} is taken by {PREFIX}{}", Named::Secret.name(name)));
                continue;
            }
            let spec = FileSpec {
                name: name.clone(),
                reference,
                format: None,
                template: None,
                delims: None,
                missing_key_error: false,
                mode: access.default_mode,
                optional: false,
                dir: true,
                cert: Some(cert.clone()),
            };
            files.add(spec, false);
        }
        for (secret, r) in &self.a.maps {
            self.check_backend(r, format!("annotation {PREFIX}map-{secret}"));
        }
        files
    }

    /// The env vars and `envFrom` entries of every container that become
    /// files (reference values, mapped Secrets), at most [`MAX_MOVED`].
    fn move_env(
        &mut self,
        selected: &BTreeSet<String>,
        access: &Access,
        files: &mut Files,
    ) -> BTreeMap<(Kind, usize), Vec<Migrated>> {
        let mut moves = Moves {
            files,
            mode: access.default_mode,
            moved: 0,
            optional_uses: HashMap::new(),
            used_maps: BTreeSet::new(),
        };
        let mut migrated = BTreeMap::new();
        for c in self.pod.app_containers() {
            let mut entries = Vec::new();
            for e in c.env() {
                let field = format!("container {}: env {}", c.name(), e.name);
                let Some((reference, optional)) = self.env_reference(&c, e.name, e.source, &field, &mut moves) else {
                    continue;
                };
                if moves.count() {
                    let file = moves.file_for(self, e.name, reference, optional, field);
                    entries.extend(file.map(|file| Migrated::Var { index: e.index, var: e.name.to_owned(), file }));
                }
            }
            for e in c.env_from() {
                let EnvFromSource::Secret { name: Some(secret), prefix, optional } = e.source else { continue };
                if let Some(dir) = self.env_dir(&c, secret, optional, &mut moves) {
                    entries.push(Migrated::Dir { index: e.index, dir, prefix: prefix.to_owned() });
                }
            }
            if !entries.is_empty() {
                if !selected.contains(c.name()) {
                    self.problem(
                        format!("container {}", c.name()),
                        format!(
                            "has env-var secrets but does not get the secrets volume: add it to {PREFIX}containers"
                        ),
                    );
                }
                migrated.insert((c.kind, c.index), entries);
            }
        }
        if moves.moved > MAX_MOVED {
            self.problem(
                "pod".into(),
                format!(
                    "{} env vars and envFrom entries are secrets to move to files; sidekey moves at most {MAX_MOVED} per pod",
                    moves.moved
                ),
            );
        }
        for (name, optional) in moves.optional_uses {
            if let Some(f) = moves.files.get_mut(&name) {
                f.optional = optional;
            }
        }
        for secret in self.a.maps.keys().filter(|s| !moves.used_maps.contains(*s)) {
            self.warnings.push(Warning::UnusedMap { secret: secret.clone() });
        }
        migrated
    }

    /// The reference an env var moves to a file with, and whether it is
    /// optional; `None` when it stays (with a problem or warning if it
    /// cannot move).
    fn env_reference(
        &mut self,
        c: &Container<'_>,
        var: &str,
        source: EnvSource<'_>,
        field: &str,
        moves: &mut Moves<'_>,
    ) -> Option<(Reference, bool)> {
        match source {
            EnvSource::Value(value) if is_env_reference(value) => match value.parse::<Reference>() {
                Ok(r) => Some((r, false)),
                Err(err) => {
                    self.problem(field.to_owned(), err.to_string());
                    None
                }
            },
            EnvSource::SecretKeyRef(SecretKeyRef { secret, key, optional }) => {
                let secret = secret.unwrap_or("");
                let Some(base) = self.a.maps.get(secret) else {
                    self.warnings.push(Warning::UnmappedSecretKeyRef {
                        container: c.name().to_owned(),
                        var: var.to_owned(),
                        secret: secret.to_owned(),
                    });
                    return None;
                };
                moves.used_maps.insert(secret.to_owned());
                let key = key.unwrap_or("");
                if !is_secret_key(key) {
                    self.problem(
                        field.to_owned(),
                        "secretKeyRef.key must be a Kubernetes Secret key (1 to 253 of A-Z a-z 0-9 - _ .)",
                    );
                    return None;
                }
                Some((base.with_key(key), optional))
            }
            _ => None,
        }
    }

    /// The directory an `envFrom` of a mapped Secret moves to; `None` when
    /// it stays (with a warning or problem).
    fn env_dir(&mut self, c: &Container<'_>, secret: &str, optional: bool, moves: &mut Moves<'_>) -> Option<String> {
        let Some(reference) = self.a.maps.get(secret) else {
            self.warnings.push(Warning::UnmappedEnvFrom { container: c.name().to_owned(), secret: secret.to_owned() });
            return None;
        };
        if !moves.count() {
            return None;
        }
        moves.used_maps.insert(secret.to_owned());
        if self.a.secrets.contains_key(secret) {
            self.annotation_problem(
                &Named::Map.name(secret),
                format!("the directory {secret} for envFrom would clash with the file of {PREFIX}secret-{secret}"),
            );
            return None;
        }
        if moves.files.get_mut(secret).is_none() {
            moves.files.add_moved(secret.to_owned(), reference.clone(), moves.mode, optional, true);
        }
        moves.note_use(secret, optional);
        if self.env_mode == EnvMode::File {
            self.warnings.push(Warning::EnvFromAsFiles {
                container: c.name().to_owned(),
                secret: secret.to_owned(),
                mount_path: self.mount_path.clone(),
            });
        }
        Some(secret.to_owned())
    }

    /// Explicit modes must let the app read; an implicit 0444 gets a warning.
    fn check_modes(&mut self, files: &Files, access: &Access) {
        for f in &files.specs {
            let explicit = files.explicit_mode.contains(&f.name);
            match access.app_can_read(f.mode) {
                Some(false) if explicit => self.annotation_problem(
                    &Named::FileMode.name(&f.name),
                    format!(
                        "mode {:04o} does not let every selected container read the file (they run as UID {}; the agent writes it as UID {} group {}); use 0440 with a pod fsGroup, or 0444",
                        f.mode,
                        access.known_uids.iter().flatten().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                        access.agent_uid,
                        access.agent_gid
                    ),
                ),
                None if explicit && f.mode & 0o004 == 0 => self.warnings.push(Warning::UnverifiedMode {
                    file: f.name.clone(),
                    mode: f.mode,
                    uid: access.agent_uid,
                    gid: access.agent_gid,
                }),
                _ => {}
            }
        }
        if access.default_mode == 0o444 && files.specs.iter().any(|f| !files.explicit_mode.contains(&f.name)) {
            self.warnings.push(Warning::WorldReadable);
        }
    }

    /// `$(VAR)` of a variable that leaves the env would silently expand to
    /// nothing.
    fn check_expansions(&mut self, c: &Container<'_>, entries: &[Migrated]) {
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
            for var in c.strings(key).flat_map(expansions) {
                let uses = expanded.entry(var).or_default();
                if uses.last().is_none_or(|u| u != key) {
                    uses.push(key.to_owned());
                }
            }
        }
        for e in c.env().filter(|e| !removed.contains(&e.index)) {
            for var in e.value().into_iter().flat_map(expansions) {
                expanded.entry(var).or_default().push(format!("env {}", e.name));
            }
        }
        for m in entries {
            let Migrated::Var { var, .. } = m else { continue };
            if let Some(uses) = expanded.get(var.as_str()).filter(|u| !u.is_empty()) {
                let reason = format!(
                    "is used as $({var}) in {}, which would silently expand to nothing once the secret leaves the env; read {var}_FILE instead",
                    uses.join(", ")
                );
                self.problem(format!("container {}: env {var}", c.name()), reason);
            }
        }
    }

    /// In env mode `file`, `<VAR>_FILE` must be free.
    fn check_file_vars(&mut self, c: &Container<'_>, entries: &[Migrated]) {
        if self.env_mode != EnvMode::File {
            return;
        }
        let existing: BTreeSet<&str> = c.env().map(|e| e.name).collect();
        for m in entries {
            let Migrated::Var { var, .. } = m else { continue };
            let file_var = format!("{var}_FILE");
            if existing.contains(file_var.as_str()) {
                self.problem(
                    format!("container {}: env {var}", c.name()),
                    format!("{file_var} is already set in the container, so sidekey cannot point it at the file"),
                );
            }
        }
    }

    /// `env: exec` wraps the container's command, so there must be one.
    fn check_exec_command(&mut self, c: &Container<'_>) {
        if self.env_mode == EnvMode::Exec && !c.has_command() && !self.a.commands.contains_key(c.name()) {
            self.problem(
                format!("container {}", c.name()),
                format!(
                    "env exec wraps the container's command, but the spec has none: set command in the container or the annotation {PREFIX}command-{} to the image's entrypoint (sidekey makes no registry calls at admission)",
                    c.name()
                ),
            );
        }
    }

    /// The agent's Vault settings: annotations over the injector config.
    fn vault_config(&self, lifecycle: Lifecycle) -> VaultConfig {
        let (a, v) = (self.a, &self.config.vault);
        let service_account = self.pod.service_account();
        let role = match (&a.vault_role, &v.role) {
            (Some(r), _) => r.clone(),
            (None, Some(template)) => expand_role(template, self.namespace, service_account),
            (None, None) => service_account.to_owned(),
        };
        let method = a.vault_auth_method.unwrap_or(v.auth_method);
        // An annotation that picks another method than the cluster's also
        // picks that method's usual mount, unless it names one.
        let other_method = a.vault_auth_method.is_some_and(|m| m != v.auth_method);
        let mount = match &a.vault_auth_mount {
            Some(m) => m.clone(),
            None if other_method => method.default_mount().to_owned(),
            None => v.auth_mount.clone(),
        };
        let token_path = format!("{TOKEN_DIR}/token");
        let auth = match method {
            AuthMethod::Kubernetes => VaultAuth::Kubernetes { mount, role, token_path },
            AuthMethod::Jwt => VaultAuth::Jwt { mount, role, token_path },
        };
        VaultConfig {
            addr: a.vault_addr.clone().unwrap_or_else(|| v.addr.clone()),
            namespace: a.vault_namespace.clone().or_else(|| v.namespace.clone()),
            auth_namespace: a.vault_auth_namespace.clone().or_else(|| v.auth_namespace.clone()),
            auth,
            ca_cert: None,
            ca_pem: v.ca_cert.clone(),
            // When the pod ends its credentials are of no use to anyone:
            // revoke them rather than leave them valid for the rest of their
            // TTL. Only a native sidecar stops after the app has.
            revoke_on_shutdown: lifecycle == Lifecycle::Sidecar && a.revoke_on_shutdown.unwrap_or(v.revoke_on_shutdown),
            // Reached only when the policy named each (check_template_calls).
            template_system_paths: a
                .secrets
                .values()
                .flat_map(|s| &s.calls)
                .filter(|c| system_path(&c.path).is_some())
                .map(|c| c.path.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
        }
    }
}

/// What moving env entries to files has collected so far.
struct Moves<'f> {
    files: &'f mut Files,
    /// The mode of files made for env entries.
    mode: u32,
    /// How many entries are secrets to move (counted past [`MAX_MOVED`]).
    moved: usize,
    /// File → whether every use of it is optional.
    optional_uses: HashMap<String, bool>,
    /// The mapped Secrets some entry reads.
    used_maps: BTreeSet<String>,
}

impl Moves<'_> {
    /// Counts one more entry to move; false past the bound.
    fn count(&mut self) -> bool {
        self.moved += 1;
        self.moved <= MAX_MOVED
    }

    fn note_use(&mut self, file: &str, optional: bool) {
        *self.optional_uses.entry(file.to_owned()).or_insert(true) &= optional;
    }

    /// The file an env var's reference is rendered to: the one of an equal
    /// reference, or a new one named after the variable.
    fn file_for(
        &mut self,
        p: &mut Planner<'_>,
        var: &str,
        reference: Reference,
        optional: bool,
        field: String,
    ) -> Option<String> {
        p.check_backend(&reference, field.clone());
        let file = match self.files.by_ref.get(&reference.to_string()) {
            Some(name) => name.clone(),
            None => {
                let name = env_file_name(var, &reference);
                if self.files.has(&name) {
                    p.problem(field, format!("its file name {name} is taken by a secret annotation"));
                    return None;
                }
                self.files.add_moved(name.clone(), reference, self.mode, optional, false);
                name
            }
        };
        self.note_use(&file, optional);
        Some(file)
    }
}
