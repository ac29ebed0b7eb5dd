//! Where pod templates live in Kubernetes objects, and the mutation of whole
//! objects (a Pod, a Deployment, a CronJob, a `v1 List` …).
//!
//! Objects that hold no pod template (ConfigMap, Service, …) are never
//! touched, whatever annotations they carry.

use serde_json::Value;

use crate::config::InjectorConfig;
use crate::mutate::{self, Invalid, Outcome};

/// The JSON pointer of the pod template inside an object of this
/// apiVersion/kind, or `None` for objects that hold none.
pub fn template_pointer(api_version: &str, kind: &str) -> Option<&'static str> {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, kind) {
        ("", "Pod") => Some(""),
        ("", "PodTemplate") => Some("/template"),
        ("", "ReplicationController") => Some("/spec/template"),
        ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => Some("/spec/template"),
        // Removed from the API in 1.16, still common in older repositories.
        ("extensions", "Deployment" | "DaemonSet" | "ReplicaSet") => Some("/spec/template"),
        ("batch", "Job") => Some("/spec/template"),
        ("batch", "CronJob") => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// Every pod template in `doc` (a `v1 List`'s items too), as the JSON
/// pointers of the object that holds it and of the template itself.
pub fn templates(doc: &Value) -> Vec<(String, String)> {
    let of = |o: &Value| template_pointer(o["apiVersion"].as_str().unwrap_or(""), o["kind"].as_str().unwrap_or(""));
    if doc["apiVersion"] == "v1" && doc["kind"].as_str().is_some_and(|k| k.ends_with("List")) {
        let items = doc["items"].as_array().into_iter().flatten().enumerate();
        items.filter_map(|(i, item)| Some((format!("/items/{i}"), format!("/items/{i}{}", of(item)?)))).collect()
    } else {
        of(doc).map(|p| (String::new(), p.to_owned())).into_iter().collect()
    }
}

/// A short label for messages: `Deployment shop/checkout`.
pub fn describe(obj: &Value) -> String {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("object");
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("<unnamed>");
    match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// What happened to one object (or one item of a List).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectOutcome {
    /// `Deployment shop/checkout`.
    pub object: String,
    /// The mutation's outcome; `None` for objects without a pod template.
    pub outcome: Option<Outcome>,
    /// Warnings for env-var secrets of a template that did not opt in.
    pub not_opted_in_warnings: Vec<mutate::Warning>,
}

/// An object that could not be injected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{object}: {invalid}")]
pub struct ObjectError {
    /// `Deployment shop/checkout`.
    pub object: String,
    /// Every problem.
    pub invalid: Invalid,
}

/// Mutates every opted-in pod template in `obj` (recursing into `v1 List`
/// items). On error `obj` is unchanged.
///
/// # Errors
/// [`ObjectError`] for the first object that cannot be injected.
pub fn mutate_object(obj: &mut Value, config: &InjectorConfig) -> Result<Vec<ObjectOutcome>, ObjectError> {
    let mut work = obj.clone();
    let mut outcomes = Vec::new();
    mutate_into(&mut work, config, &mut outcomes)?;
    *obj = work;
    Ok(outcomes)
}

fn mutate_into(obj: &mut Value, config: &InjectorConfig, out: &mut Vec<ObjectOutcome>) -> Result<(), ObjectError> {
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_owned();
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("").to_owned();
    if api_version == "v1" && kind.ends_with("List") {
        for item in obj.get_mut("items").and_then(Value::as_array_mut).into_iter().flatten() {
            mutate_into(item, config, out)?;
        }
        return Ok(());
    }
    let object = describe(obj);
    let Some(template) = template_pointer(&api_version, &kind).and_then(|p| obj.pointer_mut(p)) else {
        out.push(ObjectOutcome { object, outcome: None, not_opted_in_warnings: Vec::new() });
        return Ok(());
    };
    let outcome =
        mutate::mutate_template(template, config).map_err(|invalid| ObjectError { object: object.clone(), invalid })?;
    let not_opted_in_warnings =
        if outcome == Outcome::NotOptedIn { mutate::env_secret_warnings(template) } else { Vec::new() };
    out.push(ObjectOutcome { object, outcome: Some(outcome), not_opted_in_warnings });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_templates_of_every_workload_kind() {
        assert_eq!(template_pointer("v1", "Pod"), Some(""));
        assert_eq!(template_pointer("apps/v1", "Deployment"), Some("/spec/template"));
        assert_eq!(template_pointer("batch/v1", "CronJob"), Some("/spec/jobTemplate/spec/template"));
        assert_eq!(template_pointer("v1", "ConfigMap"), None);
        assert_eq!(template_pointer("example.com/v1", "Deployment"), None);
    }

    #[test]
    fn lists_are_mutated_item_by_item_and_errors_leave_all_unchanged() {
        let ok = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a", "annotations": {"sidekey.dev/inject": "true"}},
            "spec": {"containers": [{"name": "c", "image": "x", "env": [{"name": "P", "value": "vault:a/b#c"}]}]}});
        let bad = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "b", "annotations": {"sidekey.dev/inject": "true", "sidekey.dev/env": "nope"}},
            "spec": {"containers": [{"name": "c", "image": "x"}]}});
        let mut list = json!({"apiVersion": "v1", "kind": "List", "items": [ok.clone(), {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}]});
        let outcomes = mutate_object(&mut list, &InjectorConfig::default()).unwrap();
        assert_eq!(outcomes.len(), 2);
        assert_eq!(list["items"][0]["metadata"]["annotations"]["sidekey.dev/status"], "injected");
        let mut list = json!({"apiVersion": "v1", "kind": "List", "items": [ok, bad]});
        let before = list.clone();
        let e = mutate_object(&mut list, &InjectorConfig::default()).unwrap_err();
        assert_eq!(e.object, "Pod b");
        assert_eq!(list, before);
    }
}
