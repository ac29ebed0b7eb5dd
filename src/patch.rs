//! The [RFC 6902] JSON Patch from an object to its mutated form, as an
//! AdmissionResponse carries it ([Kubernetes admission]).
//!
//! [RFC 6902]: https://www.rfc-editor.org/rfc/rfc6902
//! [Kubernetes admission]: https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/#response

use serde_json::Value;

pub use json_patch::{Patch, PatchError, PatchOperation};

/// The operations that turn `before` into `after`.
pub fn diff(before: &Value, after: &Value) -> Patch {
    json_patch::diff(before, after)
}

/// Applies `patch` to `doc`; on error `doc` is unchanged.
///
/// # Errors
/// [`PatchError`] when an operation does not apply.
pub fn apply(doc: &mut Value, patch: &Patch) -> Result<(), PatchError> {
    json_patch::patch(doc, patch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_applied_gives_the_target_with_escaped_keys() {
        let before = json!({"metadata": {"annotations": {"sidekey.dev/inject": "true"}}, "spec": {"containers": [{"name": "a"}]}});
        let after = json!({"metadata": {"annotations": {"sidekey.dev/inject": "true", "sidekey.dev/status": "injected"}},
            "spec": {"initContainers": [{"name": "sidekey-agent"}], "containers": [{"name": "a", "volumeMounts": []}]}});
        let p = diff(&before, &after);
        let text = serde_json::to_string(&p).unwrap();
        assert!(text.contains("sidekey.dev~1status"), "{text}");
        let mut doc = before.clone();
        apply(&mut doc, &p).unwrap();
        assert_eq!(doc, after);
    }
}
