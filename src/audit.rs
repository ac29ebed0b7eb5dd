//! `sidekey audit`: finds the anti-patterns container security guides list —
//! secrets in env vars, root, privilege escalation, writable root
//! filesystems, missing limits, unpinned images, host namespaces, no
//! default-deny NetworkPolicy — in Kubernetes objects (raw JSON).
//!
//! Findings name the object, the field path and a fix, never a value: a
//! literal that looks like a key is reported by its variable name and the
//! kind of key it looks like.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Value, json};

use crate::pod::{Container, EnvFromSource, EnvSource, PodSpec, SecretKeyRef};
use crate::pss::{self, Check};
use crate::reference::is_env_reference;

use crate::workload::{describe, template_pointer};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth fixing.
    Low,
    /// Should be fixed.
    Medium,
    /// Fix first.
    High,
}

impl Severity {
    /// `low`, `medium`, `high`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
        }
    }

    /// The SARIF `level`.
    pub fn sarif_level(self) -> &'static str {
        match self {
            Severity::High => "error",
            Severity::Medium => "warning",
            Severity::Low => "note",
        }
    }
}

/// One rule.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    /// Stable id, e.g. `SK001`.
    pub id: &'static str,
    /// Short name.
    pub name: &'static str,
    /// Default severity.
    pub severity: Severity,
    /// What it finds.
    pub description: &'static str,
}

macro_rules! rules {
    ($($konst:ident = $id:literal, $name:literal, $sev:ident, $desc:literal;)*) => {
        $(
            #[doc = $desc]
            pub const $konst: Rule = Rule { id: $id, name: $name, severity: Severity::$sev, description: $desc };
        )*
        /// Every rule.
        pub const RULES: &[Rule] = &[$($konst),*];
    };
}

rules! {
    SECRET_KEY_REF = "SK001", "secret-in-env", Medium, "An env var comes from a Kubernetes Secret (secretKeyRef): visible in /proc/PID/environ, crash dumps and child processes.";
    SECRET_ENV_FROM = "SK002", "secret-env-from", Medium, "envFrom exposes every key of a Kubernetes Secret as env vars.";
    SECRET_LITERAL_NAME = "SK003", "secret-literal-by-name", High, "An env var whose name says it is a secret holds a literal value in the pod spec (and so in etcd and kubectl describe).";
    SECRET_LITERAL_VALUE = "SK004", "secret-literal-by-value", High, "An env var holds a literal that looks like a credential (AWS access key id, PEM private key, JWT, password in a URL).";
    MISSED_INJECTION = "SK007", "missed-injection", High, "A running pod opted in to sidekey but carries no agent: it was created while the webhook was down, bypassed or not selecting its namespace, so its secrets are not files and reference values reach the app as text.";
    AGENT_NOT_READY = "SK008", "agent-not-ready", Medium, "The sidekey agent of a running pod is not ready: some secret files are missing or could not be refreshed.";
    NOT_AUDITED = "SK006", "not-audited", Low, "An object of a kind sidekey does not know holds containers (a custom resource that runs pods): it was not audited, so review it by hand.";
    REFERENCE_NOT_INJECTED = "SK005", "reference-not-injected", Medium, "An env var holds a secret reference but the pod does not opt in to sidekey, so the app gets the reference text.";
    RUNS_AS_ROOT = "SK101", "runs-as-root", High, "The container may run as root: runAsNonRoot is not true, or runAsUser is 0.";
    PRIVILEGE_ESCALATION = "SK102", "privilege-escalation", Medium, "allowPrivilegeEscalation is not false.";
    CAPABILITIES = "SK103", "capabilities-not-dropped", Medium, "Capabilities are not dropped (drop: [ALL]).";
    PRIVILEGED = "SK104", "privileged", High, "The container is privileged.";
    WRITABLE_ROOT = "SK105", "writable-root-filesystem", Low, "The root filesystem is writable (readOnlyRootFilesystem is not true).";
    NO_SECCOMP = "SK106", "no-seccomp-profile", Medium, "No seccomp profile (RuntimeDefault or Localhost).";
    NO_LIMITS = "SK107", "no-resource-limits", Low, "CPU or memory limits are missing.";
    IMAGE_LATEST = "SK108", "image-latest", Medium, "The image uses :latest or no tag.";
    IMAGE_NOT_PINNED = "SK109", "image-not-pinned", Low, "The image is not pinned by digest (@sha256:…).";
    HOST_NAMESPACES = "SK110", "host-namespaces", High, "The pod uses the host's network, PID or IPC namespace.";
    HOST_PATH = "SK111", "host-path", High, "The pod mounts a hostPath volume.";
    NO_DEFAULT_DENY = "SK201", "no-default-deny-networkpolicy", Medium, "A namespace has workloads but no default-deny NetworkPolicy.";
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Rule id.
    pub rule: &'static str,
    /// Severity.
    pub severity: Severity,
    /// `Deployment shop/checkout`.
    pub object: String,
    /// The field, e.g. `spec.template.spec.containers[app].env[DB_PASSWORD]`.
    pub path: String,
    /// What is wrong (never a value).
    pub message: String,
    /// How to fix it.
    pub hint: String,
    /// For heuristics: how sure the finding is (`high`, `medium`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<&'static str>,
}

/// Parts of a name that mark a variable as a secret (high confidence), and
/// whole words that probably do (medium).
const SECRET_FRAGMENTS: [&str; 8] =
    ["PASSWORD", "PASSWD", "SECRET", "PRIVATE_KEY", "API_KEY", "APIKEY", "ACCESS_KEY", "CREDENTIAL"];
const SECRET_WORDS: [&str; 4] = ["TOKEN", "AUTH", "PASS", "KEY"];

/// What kind of credential a literal looks like, if any.
fn credential_kind(v: &str) -> Option<&'static str> {
    let b = v.as_bytes();
    let is_key_id = |prefix: &str| {
        v.len() == 20 && v.starts_with(prefix) && b[4..].iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    };
    if is_key_id("AKIA") || is_key_id("ASIA") {
        return Some("an AWS access key id");
    }
    if v.contains("-----BEGIN") && v.contains("PRIVATE KEY-----") {
        return Some("a PEM private key");
    }
    let parts: Vec<&str> = v.split('.').collect();
    if parts.len() == 3
        && v.starts_with("eyJ")
        && parts[1].starts_with("eyJ")
        && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'))
    {
        return Some("a JWT");
    }
    if let Some(rest) = v.split_once("://").map(|(_, r)| r) {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if userinfo.contains(':') && !userinfo.ends_with(':') {
                return Some("a URL with a password");
            }
            // A key as the user (a Sentry DSN, an API key in the URL).
            if userinfo.len() >= 16 && userinfo.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Some("a URL with a key");
            }
        }
        // Webhook URLs whose path is the credential.
        let host = authority.rsplit('@').next().unwrap_or("");
        let path = rest.get(authority.len()..).unwrap_or("");
        if (host == "hooks.slack.com" && path.starts_with("/services/"))
            || ((host == "discord.com" || host == "discordapp.com") && path.starts_with("/api/webhooks/"))
        {
            return Some("a webhook URL with its token");
        }
    }
    None
}

/// Whether a literal cannot be a credential whatever its variable is named
/// (`TOKEN_EXPIRY_SECONDS: "3600"`, `AUTH_ENABLED: "true"`,
/// `PASSWORD_MAX_AGE: 90d`, `AUTH_URL: https://idp.example/authorize`):
/// integers of at most 5 digits (a longer one may be a PIN or a numeric
/// token), booleans and switch words, Go-style durations, and URLs with
/// neither user info nor a query (where credentials go).
fn cannot_be_secret(v: &str) -> bool {
    let v = v.trim();
    let lower = v.to_ascii_lowercase();
    if ["true", "false", "yes", "no", "on", "off", "enabled", "disabled", "none", "null"].contains(&lower.as_str()) {
        return true;
    }
    let digits = v.strip_prefix('-').unwrap_or(v);
    if !digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    if is_duration(&lower) {
        return true;
    }
    if let Some((scheme, rest)) = v.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        return !scheme.is_empty()
            && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
            && !authority.contains('@')
            && !rest.contains('?');
    }
    false
}

/// `30s`, `5m`, `1h30m`, `1.5h`, `250ms`, `7d`: one or more number+unit pairs.
fn is_duration(v: &str) -> bool {
    let mut rest = v;
    let mut pairs = 0;
    while !rest.is_empty() {
        let n = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        if n == 0 {
            return false;
        }
        rest = &rest[n..];
        let unit = ["ns", "us", "µs", "ms", "s", "m", "h", "d", "w"].into_iter().find(|u| rest.starts_with(u));
        let Some(unit) = unit else { return false };
        rest = &rest[unit.len()..];
        pairs += 1;
    }
    pairs > 0
}

/// Whether `name` looks like a secret's variable name; returns the confidence.
fn secret_name(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    // Paths to secrets are not secrets, nor are what describes them: their
    // name, header, algorithm, provider, store, audience, id.
    const NOT_SECRETS: [&str; 12] = [
        "_FILE",
        "_PATH",
        "_DIR",
        "_NAME",
        "_HEADER",
        "_ALGORITHM",
        "_ALG",
        "_PROVIDER",
        "_STORE",
        "_AUDIENCE",
        "_ID",
        "_TYPE",
    ];
    if NOT_SECRETS.iter().any(|s| upper.ends_with(s)) {
        return None;
    }
    if SECRET_FRAGMENTS.iter().any(|f| upper.contains(f)) {
        return Some("high");
    }
    upper.split(['_', '-']).any(|w| SECRET_WORDS.contains(&w)).then_some("medium")
}

fn push(
    out: &mut Vec<Finding>,
    rule: Rule,
    object: &str,
    path: String,
    message: String,
    hint: &str,
    confidence: Option<&'static str>,
) {
    out.push(Finding {
        rule: rule.id,
        severity: rule.severity,
        object: object.to_owned(),
        path,
        message,
        hint: hint.to_owned(),
        confidence,
    });
}

fn audit_container(c: &Container<'_>, prefix: &str, opted_in: bool, object: &str, out: &mut Vec<Finding>) {
    let name = c.name();
    let at = |field: &str| format!("{prefix}[{name}]{field}");
    for e in c.env() {
        let var = e.name;
        let path = at(&format!(".env[{var}]"));
        let value = match e.source {
            EnvSource::SecretKeyRef(SecretKeyRef { secret: Some(secret), .. }) => {
                push(
                    out,
                    SECRET_KEY_REF,
                    object,
                    path,
                    format!("env {var} comes from Kubernetes Secret {secret}"),
                    &format!(
                        "move it to a file: add sidekey.dev/inject: \"true\" and sidekey.dev/map-{secret}: <reference> to the pod template (sidekey migrate does this)"
                    ),
                    None,
                );
                continue;
            }
            EnvSource::Value(value) if !value.is_empty() => value,
            _ => continue,
        };
        if is_env_reference(value) {
            if !opted_in {
                push(
                    out,
                    REFERENCE_NOT_INJECTED,
                    object,
                    path,
                    format!("env {var} holds a secret reference but the pod does not opt in"),
                    "add sidekey.dev/inject: \"true\" to the pod template (sidekey migrate does this)",
                    None,
                );
            }
            continue;
        }
        if let Some(kind) = credential_kind(value) {
            push(
                out,
                SECRET_LITERAL_VALUE,
                object,
                path,
                format!("env {var} holds a literal that looks like {kind}"),
                "rotate that credential, store it in Vault or AWS Secrets Manager and reference it (vault:… or aws-sm:…)",
                Some("high"),
            );
        } else if let Some(conf) = secret_name(var).filter(|_| !cannot_be_secret(value)) {
            push(
                out,
                SECRET_LITERAL_NAME,
                object,
                path,
                format!("env {var} looks like a secret and holds a literal value"),
                "store it in Vault or AWS Secrets Manager and put the reference in the value (vault:…, aws-sm:…)",
                Some(conf),
            );
        }
    }
    for e in c.env_from() {
        if let EnvFromSource::Secret { name: Some(secret), .. } = e.source {
            push(
                out,
                SECRET_ENV_FROM,
                object,
                at(".envFrom"),
                format!("envFrom exposes every key of Kubernetes Secret {secret}"),
                &format!("add sidekey.dev/map-{secret}: <reference> so the keys become files"),
                None,
            );
        }
    }
    audit_security_context(c, &at, object, out);
    if c.security("readOnlyRootFilesystem").and_then(Value::as_bool) != Some(true) {
        push(
            out,
            WRITABLE_ROOT,
            object,
            at(".securityContext.readOnlyRootFilesystem"),
            format!("container {name} can write its root filesystem"),
            "set readOnlyRootFilesystem: true and mount an emptyDir where it must write",
            None,
        );
    }
    audit_resources_and_image(c, &at, object, out);
}

/// The Pod Security `restricted` checks ([`pss`]) a container fails, as
/// findings: the rules here only name and explain them.
fn audit_security_context(c: &Container<'_>, at: &dyn Fn(&str) -> String, object: &str, out: &mut Vec<Finding>) {
    let failed: BTreeSet<Check> = pss::container_violations(c).into_iter().map(|v| v.check).collect();
    let name = c.name();
    let rules: [(&[Check], Rule, &str, String, &str); 5] = [
        (
            &[Check::RunAsNonRoot, Check::RunAsUser],
            RUNS_AS_ROOT,
            ".securityContext",
            format!("container {name} may run as root"),
            "set runAsNonRoot: true and a non-zero runAsUser",
        ),
        (
            &[Check::Privileged],
            PRIVILEGED,
            ".securityContext.privileged",
            format!("container {name} is privileged"),
            "remove privileged: true",
        ),
        (
            &[Check::AllowPrivilegeEscalation],
            PRIVILEGE_ESCALATION,
            ".securityContext.allowPrivilegeEscalation",
            format!("container {name} may escalate privileges"),
            "set allowPrivilegeEscalation: false",
        ),
        (
            &[Check::DropAll],
            CAPABILITIES,
            ".securityContext.capabilities",
            format!("container {name} keeps its capabilities"),
            "set capabilities: {drop: [ALL]}",
        ),
        (
            &[Check::SeccompProfile],
            NO_SECCOMP,
            ".securityContext.seccompProfile",
            format!("container {name} has no seccomp profile"),
            "set seccompProfile: {type: RuntimeDefault} on the pod or container",
        ),
    ];
    for (checks, rule, field, message, hint) in rules {
        if checks.iter().any(|c| failed.contains(c)) {
            push(out, rule, object, at(field), message, hint, None);
        }
    }
}

/// Limits and image pinning.
fn audit_resources_and_image(c: &Container<'_>, at: &dyn Fn(&str) -> String, object: &str, out: &mut Vec<Finding>) {
    let name = c.name();
    let limits = c.field("resources").and_then(|r| r.get("limits"));
    let missing: Vec<&str> =
        ["cpu", "memory"].into_iter().filter(|k| limits.and_then(|l| l.get(*k)).is_none()).collect();
    if !missing.is_empty() {
        push(
            out,
            NO_LIMITS,
            object,
            at(".resources.limits"),
            format!("container {name} has no {} limit", missing.join(" or ")),
            "set resources.limits.cpu and resources.limits.memory",
            None,
        );
    }
    let image = c.image();
    let (repo_tag, digest) = match image.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (image, None),
    };
    let last = repo_tag.rsplit('/').next().unwrap_or(repo_tag);
    let tag = last.split_once(':').map(|(_, t)| t);
    if digest.is_none() && matches!(tag, None | Some("latest")) {
        push(
            out,
            IMAGE_LATEST,
            object,
            at(".image"),
            format!("container {name} uses image {image} (latest or untagged)"),
            "use an explicit version tag, and pin by digest",
            None,
        );
    }
    if digest.is_none() {
        push(
            out,
            IMAGE_NOT_PINNED,
            object,
            at(".image"),
            format!("container {name}: image {image} is not pinned by digest"),
            "reference the image as name@sha256:<digest>",
            None,
        );
    }
}

/// A pod read from a cluster (it has a `status.phase`): whether it missed
/// its injection, and whether its agent is ready. A Pod in a manifest has
/// no status and is not injected yet, which is normal.
fn audit_running_pod(pod: &Value, opted_in: bool, object: &str, out: &mut Vec<Finding>) {
    let Some(phase) = pod.pointer("/status/phase").and_then(Value::as_str) else { return };
    if !matches!(phase, "Pending" | "Running") {
        return;
    }
    let agents = [crate::mutate::AGENT_CONTAINER, crate::mutate::INIT_CONTAINER];
    let spec = PodSpec::of_template(pod);
    let has_agent = spec.app_containers().any(|c| agents.contains(&c.name()));
    if opted_in && !has_agent {
        push(
            out,
            MISSED_INJECTION,
            object,
            "metadata.annotations[sidekey.dev/inject]".into(),
            format!("the pod opted in to sidekey but runs without its agent ({phase})"),
            "delete the pod so that its controller recreates it through the webhook; check that the webhook is up and that its namespaceSelector matches the namespace",
            None,
        );
        return;
    }
    let statuses = ["initContainerStatuses", "containerStatuses"]
        .iter()
        .flat_map(|k| pod.pointer(&format!("/status/{k}")).and_then(Value::as_array).into_iter().flatten());
    for st in statuses.filter(|st| st["name"] == crate::mutate::AGENT_CONTAINER) {
        if st["ready"] != true {
            let restarts = st["restartCount"].as_u64().unwrap_or(0);
            push(
                out,
                AGENT_NOT_READY,
                object,
                "status.containerStatuses[sidekey-agent]".into(),
                format!("the sidekey agent is not ready ({restarts} restarts)"),
                "read its log (kubectl logs <pod> -c sidekey-agent): it names the file, the reference and the reason",
                None,
            );
        }
    }
}

/// The dotted path of the first `containers` list inside `v` (at most 12
/// levels down), if any.
fn containers_within(v: &Value, at: String, depth: usize) -> Option<String> {
    if depth > 12 {
        return None;
    }
    let join = |k: &str| if at.is_empty() { k.to_owned() } else { format!("{at}.{k}") };
    match v {
        Value::Object(m) => m.iter().find_map(|(k, v)| {
            if k == "containers" && v.is_array() { Some(join(k)) } else { containers_within(v, join(k), depth + 1) }
        }),
        Value::Array(a) => {
            a.iter().enumerate().find_map(|(i, v)| containers_within(v, format!("{at}[{i}]"), depth + 1))
        }
        _ => None,
    }
}

/// The findings of one object (List items are audited one by one).
pub fn audit_object(obj: &Value) -> Vec<Finding> {
    let mut out = Vec::new();
    if obj["apiVersion"] == "v1" && obj["kind"].as_str().is_some_and(|k| k.ends_with("List")) {
        for item in obj["items"].as_array().into_iter().flatten() {
            out.extend(audit_object(item));
        }
        return out;
    }
    let (Some(api), Some(kind)) = (obj["apiVersion"].as_str(), obj["kind"].as_str()) else { return out };
    let Some(pointer) = template_pointer(api, kind) else {
        if let Some(at) = containers_within(obj, String::new(), 0) {
            push(
                &mut out,
                NOT_AUDITED,
                &describe(obj),
                at,
                format!("not audited: {api} {kind} is not a kind sidekey knows, and it holds containers"),
                "review its containers by hand (env secrets, security context); sidekey audits Pods, workload controllers and CronJobs",
                None,
            );
        }
        return out;
    };
    let Some(template) = obj.pointer(pointer) else { return out };
    let object = describe(obj);
    let prefix = if pointer.is_empty() {
        "spec".to_owned()
    } else {
        format!("{}.spec", pointer.trim_start_matches('/').replace('/', "."))
    };
    let pod = PodSpec::of_template(template);
    let opted_in =
        template.pointer("/metadata/annotations/sidekey.dev~1inject").and_then(Value::as_str) == Some("true");
    for key in pss::HOST_NAMESPACES {
        if pod.is_true(key) {
            push(
                &mut out,
                HOST_NAMESPACES,
                &object,
                format!("{prefix}.{key}"),
                format!("the pod sets {key}: true"),
                "remove it; use a Service or a sidecar instead",
                None,
            );
        }
    }
    for (n, v) in pod.volumes() {
        if v.get("hostPath").is_some() {
            push(
                &mut out,
                HOST_PATH,
                &object,
                format!("{prefix}.volumes[{n}]"),
                format!("volume {n} mounts a host path"),
                "use a PersistentVolumeClaim, emptyDir or a CSI volume",
                None,
            );
        }
    }
    for c in pod.app_containers().filter(|c| !c.name().starts_with("sidekey-")) {
        audit_container(&c, &format!("{prefix}.{}", c.kind.key()), opted_in, &object, &mut out);
    }
    if kind == "Pod" {
        audit_running_pod(obj, opted_in, &object, &mut out);
    }
    out
}

/// Findings across objects, plus namespaces with workloads but no
/// default-deny NetworkPolicy among them (`check_network_policies`: only when
/// the inputs are meant to be a namespace's whole set).
pub fn audit_all(objects: &[Value], check_network_policies: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut workload_ns: BTreeMap<String, String> = BTreeMap::new();
    let mut deny_ns: BTreeSet<String> = BTreeSet::new();
    let mut flat = Vec::new();
    for o in objects {
        if o["apiVersion"] == "v1" && o["kind"].as_str().is_some_and(|k| k.ends_with("List")) {
            flat.extend(o["items"].as_array().cloned().unwrap_or_default());
        } else {
            flat.push(o.clone());
        }
    }
    for o in &flat {
        out.extend(audit_object(o));
        let ns = o.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default").to_owned();
        let (api, kind) = (o["apiVersion"].as_str().unwrap_or(""), o["kind"].as_str().unwrap_or(""));
        if template_pointer(api, kind).is_some() {
            workload_ns.entry(ns).or_insert_with(|| describe(o));
        } else if kind == "NetworkPolicy" {
            let empty_selector = o.pointer("/spec/podSelector").is_some_and(|s| {
                s.as_object().is_none_or(|m| m.values().all(|v| v.as_object().is_some_and(serde_json::Map::is_empty)))
            });
            let types = o.pointer("/spec/policyTypes").and_then(Value::as_array);
            let ingress_denied = o.pointer("/spec/ingress").is_none_or(|i| i.as_array().is_some_and(Vec::is_empty))
                && types.is_none_or(|t| t.iter().any(|x| x == "Ingress"));
            if empty_selector && ingress_denied {
                deny_ns.insert(ns);
            }
        }
    }
    if check_network_policies {
        for (ns, example) in workload_ns {
            if !deny_ns.contains(&ns) {
                push(
                    &mut out,
                    NO_DEFAULT_DENY,
                    &format!("Namespace {ns}"),
                    format!("namespace {ns}"),
                    format!(
                        "namespace {ns} has workloads ({example}) but no default-deny NetworkPolicy among the inputs"
                    ),
                    "add a NetworkPolicy with podSelector: {} and policyTypes: [Ingress, Egress], then allow what is needed",
                    None,
                );
            }
        }
    }
    out
}

/// SARIF 2.1.0 for code-scanning UIs (<https://docs.oasis-open.org/sarif/sarif/v2.1.0/>).
pub fn to_sarif(findings: &[(String, Finding)]) -> Value {
    let rules: Vec<Value> = RULES
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.name,
                "shortDescription": {"text": r.description},
                "defaultConfiguration": {"level": r.severity.sarif_level()},
                "properties": {"security-severity": match r.severity { Severity::High => "8.0", Severity::Medium => "5.0", Severity::Low => "2.0" }},
            })
        })
        .collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|(file, f)| {
            json!({
                "ruleId": f.rule,
                "ruleIndex": RULES.iter().position(|r| r.id == f.rule).unwrap_or(0),
                "level": f.severity.sarif_level(),
                "message": {"text": format!("{}: {}. Fix: {}", f.object, f.message, f.hint)},
                "locations": [{
                    "physicalLocation": {"artifactLocation": {"uri": file}},
                    "logicalLocations": [{"fullyQualifiedName": format!("{}:{}", f.object, f.path), "kind": "object"}],
                }],
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "sidekey",
                "version": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://github.com/sidekey/sidekey",
                "rules": rules,
            }},
            "results": results,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_of(f: &[Finding]) -> Vec<&'static str> {
        f.iter().map(|f| f.rule).collect()
    }

    #[test]
    fn recognizes_credentials_without_keeping_them() {
        assert_eq!(credential_kind("AKIAIOSFODNN7EXAMPLE"), Some("an AWS access key id"));
        assert_eq!(credential_kind("-----BEGIN RSA PRIVATE KEY-----\nMII…"), Some("a PEM private key"));
        assert_eq!(credential_kind("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"), Some("a JWT"));
        assert_eq!(credential_kind("postgres://app:hunter2@db:5432/x"), Some("a URL with a password"));
        assert_eq!(credential_kind("https://example.com/a@b"), None);
        assert_eq!(credential_kind("info"), None);
    }

    #[test]
    fn legacy_groups_are_audited_and_unknown_kinds_with_containers_are_reported() {
        let template = json!({"spec": {"containers": [{"name": "c", "image": "x",
            "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}});
        let legacy = json!({"apiVersion": "extensions/v1beta1", "kind": "Deployment", "metadata": {"name": "old"}, "spec": {"template": template}});
        assert!(rules_of(&audit_object(&legacy)).contains(&"SK001"));
        let rollout = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {"name": "r"}, "spec": {"template": template}});
        let f = audit_object(&rollout);
        assert_eq!(rules_of(&f), vec!["SK006"]);
        assert_eq!(f[0].path, "spec.template.spec.containers");
        assert_eq!(f[0].severity, Severity::Low);
        let config =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"containers": "x"}});
        assert!(audit_object(&config).is_empty());
    }

    #[test]
    fn values_that_cannot_be_secrets_are_not_findings() {
        for v in [
            "3600",
            "-1",
            "true",
            "Off",
            "disabled",
            "30s",
            "1h30m",
            "1.5h",
            "250ms",
            "7d",
            "https://idp.example/authorize",
            "http://auth:8080",
        ] {
            assert!(cannot_be_secret(v), "{v}");
        }
        for v in [
            "123456",
            "hunter2",
            "s3cr3t",
            "https://x.example/?token=abc",
            "postgres://u:p@db/x",
            "30 s",
            "m5",
            "0x1F2E",
            "ssh://git@host/r",
        ] {
            assert!(!cannot_be_secret(v), "{v}");
        }
        let pod = |var: &str, value: &str| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"},
                "spec": {"containers": [{"name": "c", "image": "x", "env": [{"name": var, "value": value}]}]}})
        };
        assert!(!rules_of(&audit_object(&pod("TOKEN_EXPIRY_SECONDS", "3600"))).contains(&"SK003"));
        assert!(!rules_of(&audit_object(&pod("AUTH_ENABLED", "true"))).contains(&"SK003"));
        assert!(rules_of(&audit_object(&pod("DB_PASSWORD", "123456"))).contains(&"SK003"));
    }

    #[test]
    fn secret_names_have_confidence() {
        assert_eq!(secret_name("DB_PASSWORD"), Some("high"));
        assert_eq!(secret_name("STRIPE_API_KEY"), Some("high"));
        assert_eq!(secret_name("GITHUB_TOKEN"), Some("medium"));
        assert_eq!(secret_name("DB_PASSWORD_FILE"), None);
        assert_eq!(secret_name("LOG_LEVEL"), None);
        assert_eq!(secret_name("MONKEY"), None);
    }

    #[test]
    fn finds_env_secrets_and_security_problems_without_values() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "n"},
            "spec": {"hostNetwork": true, "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
              "containers": [{"name": "c", "image": "nginx",
                "env": [
                  {"name": "DB_PASSWORD", "value": "hunter2-literal"},
                  {"name": "AWS_ACCESS_KEY_ID", "value": "AKIAIOSFODNN7EXAMPLE"},
                  {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                  {"name": "R", "value": "vault:secret/data/a#b"},
                  {"name": "LOG_LEVEL", "value": "info"}],
                "envFrom": [{"secretRef": {"name": "all"}}],
                "securityContext": {"privileged": true, "runAsUser": 0}}]}});
        let f = audit_object(&pod);
        let r = rules_of(&f);
        for id in [
            "SK001", "SK002", "SK003", "SK004", "SK005", "SK101", "SK102", "SK103", "SK104", "SK105", "SK106", "SK107",
            "SK108", "SK109", "SK110", "SK111",
        ] {
            assert!(r.contains(&id), "{id} missing in {r:?}");
        }
        let text = serde_json::to_string(&f).unwrap();
        assert!(!text.contains("hunter2") && !text.contains("AKIAIOSFODNN7EXAMPLE"), "{text}");
        assert!(f.iter().any(|x| x.path == "spec.containers[c].env[DB_PASSWORD]"));
    }

    #[test]
    fn a_hardened_pod_has_no_findings() {
        let pod = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "n"},
            "spec": {"template": {"metadata": {}, "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
              "containers": [{"name": "c", "image": "reg/app:1.2@sha256:abc", "env": [{"name": "DB_PASSWORD_FILE", "value": "/run/secrets/x"}],
                "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}}}]}}}});
        assert_eq!(audit_object(&pod), vec![]);
        let deny = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "deny", "namespace": "n"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}});
        assert_eq!(audit_all(&[pod.clone(), deny], true), vec![]);
        assert_eq!(rules_of(&audit_all(&[pod], true)), ["SK201"]);
    }

    #[test]
    fn running_pods_that_missed_injection_or_whose_agent_is_not_ready_are_found() {
        let pod = |annotations: Value, init: Value, status: Value| {
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "shop", "annotations": annotations},
                   "spec": {"initContainers": init, "containers": [{"name": "app", "image": "a@sha256:1"}]}, "status": status})
        };
        let rules = |o: &Value| {
            audit_object(o).into_iter().map(|f| f.rule).filter(|r| ["SK007", "SK008"].contains(r)).collect::<Vec<_>>()
        };
        let opted = json!({"sidekey.dev/inject": "true"});
        let agent = json!([{"name": "sidekey-agent", "image": "agent@sha256:1"}]);
        // Opted in, no agent, running: missed.
        assert_eq!(rules(&pod(opted.clone(), json!([]), json!({"phase": "Running"}))), ["SK007"]);
        // The same in a manifest (no status): not yet applied, nothing to say.
        assert!(rules(&pod(opted.clone(), json!([]), Value::Null)).is_empty());
        // A finished pod is history.
        assert!(rules(&pod(opted.clone(), json!([]), json!({"phase": "Succeeded"}))).is_empty());
        // Injected, agent not ready; then ready.
        let not_ready = json!({"phase": "Running", "initContainerStatuses": [{"name": "sidekey-agent", "ready": false, "restartCount": 3}]});
        assert_eq!(rules(&pod(opted.clone(), agent.clone(), not_ready)), ["SK008"]);
        let ready = json!({"phase": "Running", "initContainerStatuses": [{"name": "sidekey-agent", "ready": true}]});
        assert!(rules(&pod(opted, agent, ready)).is_empty());
        // Not opted in: not sidekey's business.
        assert!(rules(&pod(json!({}), json!([]), json!({"phase": "Running"}))).is_empty());
    }
}
