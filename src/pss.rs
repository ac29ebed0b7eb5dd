//! The Pod Security Standard `restricted` profile (which includes
//! `baseline`), checked over the raw JSON of a pod spec.
//!
//! Used to prove that everything sidekey adds passes `restricted` on its own
//! terms, and that a compliant pod stays compliant after injection. It
//! follows <https://kubernetes.io/docs/concepts/security/pod-security-standards/>
//! for the fields sidekey and typical workloads touch; the API server's
//! PodSecurity admission remains the authority.

use serde_json::Value;

/// One failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The container, or `None` for pod-level fields.
    pub container: Option<String>,
    /// The check, as the PodSecurity admission names it (`runAsNonRoot`, …).
    pub check: &'static str,
    /// What is wrong.
    pub detail: String,
}

const ALLOWED_VOLUMES: [&str; 8] =
    ["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];

fn containers(spec: &Value) -> impl Iterator<Item = &Value> {
    ["initContainers", "containers", "ephemeralContainers"]
        .into_iter()
        .flat_map(move |k| spec.get(k).and_then(Value::as_array).into_iter().flatten())
}

/// Checks one container on its own terms, with the pod-level security
/// context it would inherit (`None` to check the container alone).
pub fn check_container(c: &Value, pod_sc: Option<&Value>) -> Vec<Violation> {
    let name = c.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
    let mut v = Vec::new();
    let mut push = |check: &'static str, detail: String| {
        v.push(Violation { container: Some(name.clone()), check, detail });
    };
    let sc = c.get("securityContext");
    let field = |key: &str| sc.and_then(|s| s.get(key));
    let inherited = |key: &str| field(key).or_else(|| pod_sc.and_then(|s| s.get(key)));

    if field("privileged").and_then(Value::as_bool) == Some(true) {
        push("privileged", "privileged: true".into());
    }
    if field("allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false) {
        push("allowPrivilegeEscalation", "allowPrivilegeEscalation must be false".into());
    }
    let drops_all = field("capabilities")
        .and_then(|c| c.get("drop"))
        .and_then(Value::as_array)
        .is_some_and(|d| d.iter().any(|x| x.as_str() == Some("ALL")));
    if !drops_all {
        push("capabilities", "capabilities.drop must include ALL".into());
    }
    if let Some(add) = field("capabilities").and_then(|c| c.get("add")).and_then(Value::as_array) {
        for cap in add.iter().filter_map(Value::as_str).filter(|c| *c != "NET_BIND_SERVICE") {
            push("capabilities", format!("capability {cap} may not be added"));
        }
    }
    if inherited("runAsNonRoot").and_then(Value::as_bool) != Some(true) {
        push("runAsNonRoot", "runAsNonRoot must be true (container or pod)".into());
    }
    if inherited("runAsUser").and_then(Value::as_i64) == Some(0) {
        push("runAsUser", "runAsUser must not be 0".into());
    }
    let seccomp = inherited("seccompProfile").and_then(|s| s.get("type")).and_then(Value::as_str);
    if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
        push("seccompProfile", "seccompProfile.type must be RuntimeDefault or Localhost".into());
    }
    if let Some(pm) = field("procMount").and_then(Value::as_str) {
        if pm != "Default" {
            push("procMount", format!("procMount {pm}"));
        }
    }
    for p in c.get("ports").and_then(Value::as_array).into_iter().flatten() {
        if p.get("hostPort").and_then(Value::as_i64).is_some_and(|h| h != 0) {
            push("hostPorts", "hostPort must not be set".into());
        }
    }
    v
}

/// Checks a whole pod spec against `restricted`.
pub fn check_pod_spec(spec: &Value) -> Vec<Violation> {
    let mut v = Vec::new();
    let mut pod = |check: &'static str, detail: String| v.push(Violation { container: None, check, detail });
    for key in ["hostNetwork", "hostPID", "hostIPC"] {
        if spec.get(key).and_then(Value::as_bool) == Some(true) {
            pod("hostNamespaces", format!("{key}: true"));
        }
    }
    for vol in spec.get("volumes").and_then(Value::as_array).into_iter().flatten() {
        let Some(obj) = vol.as_object() else { continue };
        if let Some(kind) = obj.keys().find(|k| *k != "name") {
            if !ALLOWED_VOLUMES.contains(&kind.as_str()) {
                pod(
                    "restrictedVolumes",
                    format!("volume {} uses {kind}", vol.get("name").and_then(Value::as_str).unwrap_or("")),
                );
            }
        }
    }
    let pod_sc = spec.get("securityContext");
    if pod_sc.and_then(|s| s.get("runAsUser")).and_then(Value::as_i64) == Some(0) {
        pod("runAsUser", "pod runAsUser must not be 0".into());
    }
    if pod_sc.and_then(|s| s.get("runAsNonRoot")).and_then(Value::as_bool) == Some(false) {
        pod("runAsNonRoot", "pod runAsNonRoot must not be false".into());
    }
    if let Some(t) = pod_sc.and_then(|s| s.get("seccompProfile")).and_then(|s| s.get("type")).and_then(Value::as_str) {
        if !matches!(t, "RuntimeDefault" | "Localhost") {
            pod("seccompProfile", format!("pod seccompProfile.type {t}"));
        }
    }
    for c in containers(spec) {
        v.extend(check_container(c, pod_sc));
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
        let checks: Vec<&str> = check_pod_spec(&p).iter().map(|v| v.check).collect();
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
