//! The second step of the mutation: write what the plan decided into the
//! pod, recording each change as a JSON Patch operation. Every check ran in
//! the plan, so nothing here can fail.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, PatchOperation, RemoveOperation, ReplaceOperation};
use serde_json::{Map, Value, json};

use super::plan::{Migrated, Plan};
use super::{
    AGENT_BINARY, AGENT_CONTAINER, BIN_DIR, BIN_VOLUME, INIT_CONTAINER, INSTALL_CONTAINER, SECRETS_VOLUME, STATE_DIR,
    STATE_VOLUME, STATUS_INJECTED, TOKEN_DIR, TOKEN_VOLUME,
};
use crate::agent_config;
use crate::annotations::{EnvMode, Key, Lifecycle, OnChange, PodAnnotations};
use crate::config::{InjectorConfig, MetricsListen};
use crate::pod::Kind;

/// Records JSON Patch operations relative to the template.
pub(super) struct Ops {
    base: PointerBuf,
    ops: Vec<PatchOperation>,
}

impl Ops {
    /// Operations under `pointer` (the template's place in the patched
    /// object; an invalid pointer is taken as the root).
    pub(super) fn new(pointer: &str) -> Self {
        Ops { base: PointerBuf::parse(pointer).unwrap_or_default(), ops: Vec::new() }
    }

    pub(super) fn into_ops(self) -> Vec<PatchOperation> {
        self.ops
    }

    fn path(&self, tokens: &[&str]) -> PointerBuf {
        let mut p = self.base.clone();
        for t in tokens {
            p.push_back(*t);
        }
        p
    }

    fn add(&mut self, tokens: &[&str], value: Value) {
        let path = self.path(tokens);
        self.ops.push(PatchOperation::Add(AddOperation { path, value }));
    }

    /// Records the new state of a key, which was there before (`had`) or not.
    fn set(&mut self, tokens: &[&str], had: bool, now: Option<&Value>) {
        let path = self.path(tokens);
        match (had, now) {
            (true, Some(v)) => self.ops.push(PatchOperation::Replace(ReplaceOperation { path, value: v.clone() })),
            (false, Some(v)) => self.ops.push(PatchOperation::Add(AddOperation { path, value: v.clone() })),
            (true, None) => self.ops.push(PatchOperation::Remove(RemoveOperation { path })),
            (false, None) => {}
        }
    }

    /// Appends `items` to the array at `obj[key]`, creating it when absent.
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

/// Writes the plan into `spec` (the pod spec object the plan was made from).
pub(super) fn apply(
    spec: &mut Map<String, Value>,
    plan: &Plan,
    a: &PodAnnotations,
    config: &InjectorConfig,
    ops: &mut Ops,
) {
    rewrite_envs(spec, plan, a, ops);
    add_app_mounts(spec, plan, ops);
    add_volumes(spec, plan, config, ops);
    add_agent(spec, plan, a, config, ops);
}

/// Marks the template injected (`sidekey.dev/status`), so a second pass
/// leaves it alone.
pub(super) fn mark_injected(template: &mut Value, ops: &mut Ops) {
    if let Some(ann) = template.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
        let key = Key::Status.key();
        ops.add(&["metadata", "annotations", &key], json!(STATUS_INJECTED));
        ann.insert(key, json!(STATUS_INJECTED));
    }
}

/// The env rewrite in each container with entries that move to files.
fn rewrite_envs(spec: &mut Map<String, Value>, plan: &Plan, a: &PodAnnotations, ops: &mut Ops) {
    const KEYS: [&str; 3] = ["env", "envFrom", "command"];
    for ((kind, index), entries) in &plan.migrated {
        let key = kind.key();
        let Some(c) = spec.get_mut(key).and_then(|l| l.get_mut(*index)).and_then(Value::as_object_mut) else {
            continue;
        };
        let had = KEYS.map(|k| c.contains_key(k));
        rewrite_env(c, entries, plan.env_mode, &plan.mount_path, a);
        let index = index.to_string();
        for (k, had) in KEYS.iter().zip(had) {
            ops.set(&["spec", key, &index, k], had, c.get(*k));
        }
    }
}

/// The read-only secrets mount in each selected container, and the `exec`
/// wrapper's mount in each container it wraps.
fn add_app_mounts(spec: &mut Map<String, Value>, plan: &Plan, ops: &mut Ops) {
    let wrapper = format!("{BIN_DIR}/sidekey-agent");
    for kind in [Kind::Init, Kind::Regular] {
        let key = kind.key();
        for (i, c) in spec.get_mut(key).and_then(Value::as_array_mut).into_iter().flatten().enumerate() {
            let Some(obj) = c.as_object_mut() else { continue };
            let name = obj.get("name").and_then(Value::as_str).unwrap_or("");
            let mut mounts = Vec::new();
            if plan.selected.contains(name) {
                mounts.push(json!({"name": SECRETS_VOLUME, "mountPath": plan.mount_path, "readOnly": true}));
            }
            let first = obj.get("command").and_then(Value::as_array).and_then(|c| c.first()).and_then(Value::as_str);
            if plan.exec_used && first == Some(wrapper.as_str()) {
                mounts.push(json!({"name": BIN_VOLUME, "mountPath": BIN_DIR, "readOnly": true}));
            }
            if !mounts.is_empty() {
                ops.append(obj, "volumeMounts", &["spec", key, &i.to_string()], mounts);
            }
        }
    }
}

/// The in-memory volumes: secrets, the login token, the wrapper, the state.
fn add_volumes(spec: &mut Map<String, Value>, plan: &Plan, config: &InjectorConfig, ops: &mut Ops) {
    let mut volumes = vec![json!({
        "name": SECRETS_VOLUME,
        "emptyDir": {"medium": "Memory", "sizeLimit": config.defaults.volume_size_limit.as_str()},
    })];
    if plan.agent_config.vault.is_some() {
        volumes.push(json!({
            "name": TOKEN_VOLUME,
            "projected": {"sources": [{"serviceAccountToken": {
                "audience": config.vault.audience,
                "expirationSeconds": config.vault.token_expiration_seconds,
                "path": "token",
            }}]},
        }));
    }
    if plan.exec_used {
        volumes.push(json!({"name": BIN_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}));
    }
    if plan.keeps_state {
        volumes.push(json!({"name": STATE_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}));
    }
    ops.append(spec, "volumes", &["spec"], volumes);
}

/// What every container sidekey adds shares.
struct AgentParts {
    resources: Value,
    security_context: Value,
    config_json: String,
}

impl AgentParts {
    fn new(plan: &Plan, a: &PodAnnotations, config: &InjectorConfig) -> Self {
        let r = &config.agent.resources;
        let o = &a.resources;
        let resources = json!({
            "requests": {
                "cpu": o.cpu_request.as_ref().unwrap_or(&r.requests.cpu).as_str(),
                "memory": o.memory_request.as_ref().unwrap_or(&r.requests.memory).as_str(),
            },
            "limits": {
                "cpu": o.cpu_limit.as_ref().unwrap_or(&r.limits.cpu).as_str(),
                "memory": o.memory_limit.as_ref().unwrap_or(&r.limits.memory).as_str(),
            },
        });
        // Pod Security `restricted` on its own terms, whatever the pod level says.
        let security_context = json!({
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": plan.access.agent_uid,
            "runAsGroup": plan.access.agent_gid,
            "seccompProfile": {"type": "RuntimeDefault"},
        });
        AgentParts { resources, security_context, config_json: plan.agent_config.to_json() }
    }

    /// The agent container, named `name`, run with `args`.
    fn agent(&self, name: &str, args: &[&str], plan: &Plan, config: &InjectorConfig) -> Value {
        let mut mounts = vec![json!({"name": SECRETS_VOLUME, "mountPath": plan.mount_path})];
        if plan.agent_config.vault.is_some() {
            mounts.push(json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}));
        }
        if plan.keeps_state {
            mounts.push(json!({"name": STATE_VOLUME, "mountPath": STATE_DIR}));
        }
        json!({
            "name": name,
            "image": config.agent.image,
            "imagePullPolicy": config.agent.image_pull_policy,
            "args": args,
            "env": [
                {"name": agent_config::ENV_VAR, "value": self.config_json},
                {"name": "SIDEKEY_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "SIDEKEY_POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            ],
            "resources": self.resources,
            "securityContext": self.security_context,
            "volumeMounts": mounts,
        })
    }

    /// The init container that copies the `exec` wrapper.
    fn installer(&self, config: &InjectorConfig) -> Value {
        json!({
            "name": INSTALL_CONTAINER,
            "image": config.agent.image,
            "imagePullPolicy": config.agent.image_pull_policy,
            "args": ["install", format!("{BIN_DIR}/sidekey-agent")],
            "resources": self.resources,
            "securityContext": self.security_context,
            "volumeMounts": [{"name": BIN_VOLUME, "mountPath": BIN_DIR}],
        })
    }
}

/// The agent in the shape of its lifecycle, and the `exec` installer.
fn add_agent(spec: &mut Map<String, Value>, plan: &Plan, a: &PodAnnotations, config: &InjectorConfig, ops: &mut Ops) {
    let parts = AgentParts::new(plan, a, config);
    let mut new_init = Vec::new();
    match plan.lifecycle {
        Lifecycle::Sidecar => {
            let mut c = parts.agent(AGENT_CONTAINER, &["run"], plan, config);
            add_metrics_port(&mut c, config);
            c["restartPolicy"] = json!("Always");
            let threshold = config.agent.startup_timeout.as_secs().max(1);
            c["startupProbe"] = json!({"exec": {"command": [AGENT_BINARY, "ready"]}, "periodSeconds": 1, "failureThreshold": threshold});
            new_init.push(c);
        }
        Lifecycle::InitOnly => new_init.push(parts.agent(AGENT_CONTAINER, &["run", "--once"], plan, config)),
        Lifecycle::Legacy => new_init.push(parts.agent(INIT_CONTAINER, &["run", "--once"], plan, config)),
    }
    if plan.exec_used {
        new_init.push(parts.installer(config));
    }
    // After the pod's leading native sidecars (a mesh proxy must be up before
    // the agent can reach Vault), before any init container that is ordinary
    // or needs the secrets.
    match spec.get_mut("initContainers").and_then(Value::as_array_mut) {
        Some(list) => {
            let at = list
                .iter()
                .position(|c| {
                    c.get("restartPolicy").and_then(Value::as_str) != Some("Always")
                        || plan.selected.contains(c.get("name").and_then(Value::as_str).unwrap_or(""))
                })
                .unwrap_or(list.len());
            for (k, c) in new_init.iter().enumerate() {
                ops.add(&["spec", "initContainers", &(at + k).to_string()], c.clone());
            }
            list.splice(at..at, new_init);
        }
        None => ops.append(spec, "initContainers", &["spec"], new_init),
    }
    if plan.lifecycle == Lifecycle::Legacy {
        let mut agent = parts.agent(AGENT_CONTAINER, &["run"], plan, config);
        add_metrics_port(&mut agent, config);
        ops.append(spec, "containers", &["spec"], vec![agent]);
    }
}

/// The long-running agent's metrics port, when the config gives one that
/// listens on the pod IP.
fn add_metrics_port(agent: &mut Value, config: &InjectorConfig) {
    if let (Some(port), MetricsListen::PodIp) = (config.agent.metrics_port, config.agent.metrics_listen) {
        agent["ports"] = json!([{"name": "sidekey-metrics", "containerPort": port, "protocol": "TCP"}]);
    }
}

/// Rewrites one container's env: moved variables leave (or become
/// `<VAR>_FILE`), moved `envFrom` entries leave, and with `env: exec` the
/// command is wrapped so the process still gets them as env vars.
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
                    env.push(json!({"name": format!("{var}_FILE"), "value": path}));
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
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        let original: Vec<Value> = match c.get("command").and_then(Value::as_array).filter(|c| !c.is_empty()) {
            Some(cmd) => cmd.clone(),
            None => a.commands.get(name).into_iter().flatten().map(|s| json!(s)).collect(),
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
