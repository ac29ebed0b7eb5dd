//! The Pod Security Standard `restricted` profile (which includes
//! `baseline`), checked over the raw JSON of a pod spec.
//!
//! Used to prove that everything sidekey adds passes `restricted` on its own
//! terms, and that a compliant pod stays compliant after injection. It
//! follows <https://kubernetes.io/docs/concepts/security/pod-security-standards/>
//! for the fields sidekey and typical workloads touch; the API server's
//! PodSecurity admission remains the authority.

use serde_json::Value;

use crate::pod::{Container, Kind, PodSpec};

/// The checks, named as the PodSecurity admission names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Check {
    /// `hostNetwork`, `hostPID` or `hostIPC` is true (baseline).
    HostNamespaces,
    /// A volume of a type other than [`ALLOWED_VOLUMES`] (restricted).
    RestrictedVolumes,
    /// `privileged: true` (baseline).
    Privileged,
    /// `allowPrivilegeEscalation` is not false (restricted).
    AllowPrivilegeEscalation,
    /// `capabilities.drop` does not include `ALL` (restricted).
    DropAll,
    /// A capability other than `NET_BIND_SERVICE` is added (baseline, restricted).
    AddedCapability,
    /// `runAsNonRoot` is not true (restricted).
    RunAsNonRoot,
    /// `runAsUser` is 0 (restricted).
    RunAsUser,
    /// The seccomp profile is not `RuntimeDefault` or `Localhost` (restricted).
    SeccompProfile,
    /// `procMount` is not `Default` (baseline).
    ProcMount,
    /// A `hostPort` is set (baseline).
    HostPorts,
}

impl Check {
    /// The name the PodSecurity admission reports it under.
    pub fn name(self) -> &'static str {
        match self {
            Check::HostNamespaces => "hostNamespaces",
            Check::RestrictedVolumes => "restrictedVolumes",
            Check::Privileged => "privileged",
            Check::AllowPrivilegeEscalation => "allowPrivilegeEscalation",
            Check::DropAll | Check::AddedCapability => "capabilities",
            Check::RunAsNonRoot => "runAsNonRoot",
            Check::RunAsUser => "runAsUser",
            Check::SeccompProfile => "seccompProfile",
            Check::ProcMount => "procMount",
            Check::HostPorts => "hostPorts",
        }
    }
}

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The container, or `None` for pod-level fields.
    pub container: Option<String>,
    /// The check.
    pub check: Check,
    /// What is wrong.
    pub detail: String,
}

/// The volume types `restricted` allows.
pub const ALLOWED_VOLUMES: [&str; 8] =
    ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];

/// The pod fields that share a host namespace.
pub const HOST_NAMESPACES: [&str; 3] = ["hostNetwork", "hostPID", "hostIPC"];

/// Checks one container on its own terms, with the pod-level security
/// context it would inherit (`None` to check the container alone).
pub fn check_container(c: &Value, pod_sc: Option<&Value>) -> Vec<Violation> {
    container_violations(&Container::new(c, Kind::Regular, pod_sc))
}

/// The checks one container fails, with what it inherits from its pod.
pub fn container_violations(c: &Container<'_>) -> Vec<Violation> {
    let name = c.name().to_owned();
    let mut v = Vec::new();
    let mut push = |check: Check, detail: String| {
        v.push(Violation { container: Some(name.clone()), check, detail });
    };
    if c.security("privileged").and_then(Value::as_bool) == Some(true) {
        push(Check::Privileged, "privileged: true".into());
    }
    if c.security("allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false) {
        push(Check::AllowPrivilegeEscalation, "allowPrivilegeEscalation must be false".into());
    }
    let capabilities = |key: &str| c.security("capabilities").and_then(|c| c.get(key)).and_then(Value::as_array);
    if !capabilities("drop").is_some_and(|d| d.iter().any(|x| x.as_str() == Some("ALL"))) {
        push(Check::DropAll, "capabilities.drop must include ALL".into());
    }
    for cap in capabilities("add").into_iter().flatten().filter_map(Value::as_str).filter(|c| *c != "NET_BIND_SERVICE")
    {
        push(Check::AddedCapability, format!("capability {cap} may not be added"));
    }
    if c.inherited("runAsNonRoot").and_then(Value::as_bool) != Some(true) {
        push(Check::RunAsNonRoot, "runAsNonRoot must be true (container or pod)".into());
    }
    if c.run_as_user() == Some(0) {
        push(Check::RunAsUser, "runAsUser must not be 0".into());
    }
    let seccomp = c.inherited("seccompProfile").and_then(|s| s.get("type")).and_then(Value::as_str);
    if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
        push(Check::SeccompProfile, "seccompProfile.type must be RuntimeDefault or Localhost".into());
    }
    if let Some(pm) = c.security("procMount").and_then(Value::as_str)
        && pm != "Default"
    {
        push(Check::ProcMount, format!("procMount {pm}"));
    }
    for p in c.field("ports").and_then(Value::as_array).into_iter().flatten() {
        if p.get("hostPort").and_then(Value::as_i64).is_some_and(|h| h != 0) {
            push(Check::HostPorts, "hostPort must not be set".into());
        }
    }
    v
}

/// Checks a whole pod spec against `restricted`.
pub fn check_pod_spec(spec: &Value) -> Vec<Violation> {
    let pod = PodSpec::new(spec);
    let mut v = Vec::new();
    let mut fail = |check: Check, detail: String| v.push(Violation { container: None, check, detail });
    for key in HOST_NAMESPACES.into_iter().filter(|k| pod.is_true(k)) {
        fail(Check::HostNamespaces, format!("{key}: true"));
    }
    for (name, vol) in pod.volumes() {
        let Some(obj) = vol.as_object() else { continue };
        if let Some(kind) = obj.keys().find(|k| *k != "name")
            && !ALLOWED_VOLUMES.contains(&kind.as_str())
        {
            fail(Check::RestrictedVolumes, format!("volume {name} uses {kind}"));
        }
    }
    let pod_sc = pod.security_context();
    if pod_sc.and_then(|s| s.get("runAsUser")).and_then(Value::as_i64) == Some(0) {
        fail(Check::RunAsUser, "pod runAsUser must not be 0".into());
    }
    if pod_sc.and_then(|s| s.get("runAsNonRoot")).and_then(Value::as_bool) == Some(false) {
        fail(Check::RunAsNonRoot, "pod runAsNonRoot must not be false".into());
    }
    if let Some(t) = pod_sc.and_then(|s| s.get("seccompProfile")).and_then(|s| s.get("type")).and_then(Value::as_str)
        && !matches!(t, "RuntimeDefault" | "Localhost")
    {
        fail(Check::SeccompProfile, format!("pod seccompProfile.type {t}"));
    }
    for c in pod.all_containers() {
        v.extend(container_violations(&c));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "a", "image": "x", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}],
            "volumes": [{"name": "t", "emptyDir": {}}]
        })
    }

    #[test]
    fn restricted_pod_passes() {
        assert_eq!(check_pod_spec(&good()), vec![]);
    }

    #[test]
    fn finds_each_violation() {
        let mut p = good();
        p["hostNetwork"] = json!(true);
        p["volumes"] = json!([{"name": "h", "hostPath": {"path": "/"}}]);
        p["containers"][0]["securityContext"] = json!({"privileged": true, "runAsUser": 0});
        let checks: Vec<&str> = check_pod_spec(&p).iter().map(|v| v.check.name()).collect();
        for c in [
            "hostNamespaces",
            "restrictedVolumes",
            "privileged",
            "allowPrivilegeEscalation",
            "capabilities",
            "runAsUser",
        ] {
            assert!(checks.contains(&c), "{c} in {checks:?}");
        }
    }

    #[test]
    fn container_settings_override_bad_pod_settings() {
        let c = json!({"name": "a", "securityContext": {
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": true, "runAsUser": 1,
            "seccompProfile": {"type": "RuntimeDefault"}}});
        let pod_sc = json!({"runAsUser": 0, "seccompProfile": {"type": "Unconfined"}});
        assert_eq!(check_container(&c, Some(&pod_sc)), vec![]);
    }
}
