//! AdmissionReview in, AdmissionReview out: the webhook's logic as a pure
//! function over the request body
//! (<https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/>).
//!
//! Business outcomes (an invalid pod, a policy refusal) are `allowed: false`
//! with a message, never an HTTP error; only a body that is not an
//! AdmissionReview gets a 400. The request `uid` is always echoed.

use base64::Engine;
use serde_json::{Value, json};
use sidekey::config::InjectorConfig;
use sidekey::mutate::{self, Outcome};

/// The largest body accepted (the API server's own request limit is 3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// What happened, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Injected (a patch was returned).
    Injected,
    /// Allowed unchanged (not opted in, injected already, not a pod CREATE).
    Skipped,
    /// Denied: the pod is invalid or the policy refuses it.
    Denied,
    /// The body was not a valid AdmissionReview.
    BadRequest,
}

impl Verdict {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Injected => "injected",
            Verdict::Skipped => "skipped",
            Verdict::Denied => "denied",
            Verdict::BadRequest => "bad_request",
        }
    }
}

/// The HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// 200, or 400 for a body that is not an AdmissionReview.
    pub status: u16,
    /// JSON.
    pub body: Vec<u8>,
    /// What happened.
    pub verdict: Verdict,
    /// The request uid, if there was one.
    pub uid: String,
    /// `namespace/name` (or generateName) of the pod, for logs.
    pub pod: String,
    /// Number of warnings returned.
    pub warnings: usize,
    /// Why a review was refused or rejected (no values in it).
    pub reason: Option<String>,
}

fn bad_request(message: &str) -> Reply {
    Reply {
        status: 400,
        body: serde_json::to_vec(&json!({"error": message})).unwrap_or_default(),
        verdict: Verdict::BadRequest,
        uid: String::new(),
        pod: String::new(),
        warnings: 0,
        reason: Some(message.to_owned()),
    }
}

fn answer(uid: &str, response: Value) -> Vec<u8> {
    let mut response = response;
    response["uid"] = json!(uid);
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    }))
    .unwrap_or_default()
}

/// The answer with a patch, written directly: the hot path of the webhook,
/// where building a `Value` and serializing it (scanning the base64 patch
/// for characters to escape) cost about a tenth of a review.
fn injected_answer(uid: &str, patch: &[u8], warnings: &[String]) -> Vec<u8> {
    use base64::engine::general_purpose::STANDARD;
    let encoded = base64::encoded_len(patch.len(), true).unwrap_or(0);
    let mut out = Vec::with_capacity(encoded + uid.len() + 192 + warnings.iter().map(|w| w.len() + 4).sum::<usize>());
    out.extend_from_slice(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"#);
    let _ = serde_json::to_writer(&mut out, uid);
    out.extend_from_slice(br#","allowed":true,"patchType":"JSONPatch","patch":""#);
    let start = out.len();
    out.resize(start + encoded, 0);
    let written = STANDARD.encode_slice(patch, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
    out.push(b'"');
    if !warnings.is_empty() {
        out.extend_from_slice(br#","warnings":"#);
        let _ = serde_json::to_writer(&mut out, warnings);
    }
    out.extend_from_slice(b"}}");
    out
}

/// Handles one request body.
pub fn review(body: &[u8], config: &InjectorConfig) -> Reply {
    if body.len() > MAX_BODY {
        return bad_request(&format!("request body of {} bytes exceeds the {MAX_BODY}-byte limit", body.len()));
    }
    let Ok(mut doc) = serde_json::from_slice::<Value>(body) else {
        return bad_request("the body is not JSON");
    };
    if doc["kind"] != "AdmissionReview" || doc["apiVersion"] != "admission.k8s.io/v1" {
        return bad_request("expected an admission.k8s.io/v1 AdmissionReview");
    }
    let request = &mut doc["request"];
    let Some(uid) = request["uid"].as_str().map(str::to_owned) else {
        return bad_request("the AdmissionReview has no request.uid");
    };
    let namespace = request["namespace"].as_str().unwrap_or("").to_owned();
    let is_pod_create = request["kind"]["kind"] == "Pod"
        && request["kind"]["group"].as_str().unwrap_or("").is_empty()
        && request["operation"] == "CREATE"
        && request.get("subResource").is_none_or(Value::is_null);
    let mut pod = std::mem::take(&mut request["object"]);
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).filter(|n| !n.is_empty());
    let name = name.or_else(|| pod.pointer("/metadata/generateName").and_then(Value::as_str)).unwrap_or("").to_owned();
    let label = format!("{namespace}/{name}");
    let reply = |status, body, verdict, warnings, reason| Reply {
        status,
        body,
        verdict,
        uid: uid.clone(),
        pod: label.clone(),
        warnings,
        reason,
    };
    if !is_pod_create || !pod.is_object() {
        return reply(200, answer(&uid, json!({"allowed": true})), Verdict::Skipped, 0, None);
    }
    match mutate::mutate_template_at(&mut pod, "", Some(&namespace), config) {
        Ok((Outcome::Injected { warnings }, patch)) => {
            let patch = serde_json::to_vec(&patch).unwrap_or_default();
            let n = warnings.len();
            reply(200, injected_answer(&uid, &patch, &warnings), Verdict::Injected, n, None)
        }
        Ok((Outcome::NotOptedIn, _)) => {
            let warnings = mutate::env_secret_warnings(&pod);
            let mut response = json!({"allowed": true});
            if !warnings.is_empty() {
                response["warnings"] = json!(warnings);
            }
            let n = warnings.len();
            reply(200, answer(&uid, response), Verdict::Skipped, n, None)
        }
        Ok((Outcome::AlreadyInjected, _)) => {
            reply(200, answer(&uid, json!({"allowed": true})), Verdict::Skipped, 0, None)
        }
        Err(invalid) => {
            let message = format!("sidekey: the pod cannot be injected: {invalid}");
            let response = json!({
                "allowed": false,
                "status": {"code": 400, "reason": "BadRequest", "message": message},
            });
            let reason = Some(invalid.problems.iter().map(|p| p.field.clone()).collect::<Vec<_>>().join(", "));
            reply(200, answer(&uid, response), Verdict::Denied, 0, reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review_of(object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "kind": {"group": "", "version": "v1", "kind": "Pod"},
                        "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
                        "namespace": "shop", "object": object}
        }))
        .unwrap()
    }

    fn response(r: &Reply) -> Value {
        serde_json::from_slice::<Value>(&r.body).unwrap()["response"].clone()
    }

    fn pod(annotations: Value, env: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "api-", "annotations": annotations},
               "spec": {"containers": [{"name": "app", "image": "x", "env": env}]}})
    }

    #[test]
    fn injects_with_a_json_patch_that_reproduces_the_mutation() {
        let input =
            pod(json!({"sidekey.dev/inject": "true"}), json!([{"name": "P", "value": "vault:secret/data/a#b"}]));
        let r = review(&review_of(input.clone()), &InjectorConfig::default());
        assert_eq!((r.status, r.verdict), (200, Verdict::Injected));
        let resp = response(&r);
        assert_eq!(resp["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(resp["allowed"], true);
        assert_eq!(resp["patchType"], "JSONPatch");
        // The pod sets no fsGroup: the 0444 warning comes with the patch.
        assert!(resp["warnings"][0].as_str().is_some_and(|w| w.contains("0444")), "{resp}");
        assert_eq!(r.warnings, 1);
        let patch: sidekey::patch::Patch = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD.decode(resp["patch"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        let mut patched = input.clone();
        sidekey::patch::apply(&mut patched, &patch).unwrap();
        let mut expected = input;
        mutate::mutate_template(&mut expected, &InjectorConfig::default()).unwrap();
        assert_eq!(patched, expected);
        assert_eq!(r.pod, "shop/api-");
    }

    #[test]
    fn denies_invalid_pods_naming_the_annotation() {
        let r = review(
            &review_of(pod(json!({"sidekey.dev/inject": "true", "sidekey.dev/secret-../x": "vault:a/b"}), json!([]))),
            &InjectorConfig::default(),
        );
        let resp = response(&r);
        assert_eq!((r.status, r.verdict), (200, Verdict::Denied));
        assert_eq!(resp["allowed"], false);
        assert_eq!(resp["status"]["code"], 400);
        assert!(resp["status"]["message"].as_str().unwrap().contains("sidekey.dev/secret-../x"), "{resp}");
        assert_eq!(resp["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    }

    #[test]
    fn warns_about_env_secrets_in_pods_that_did_not_opt_in() {
        let r = review(
            &review_of(pod(json!({}), json!([{"name": "T", "value": "vault:secret/data/a#t"}]))),
            &InjectorConfig::default(),
        );
        let resp = response(&r);
        assert_eq!(resp["allowed"], true);
        assert!(resp.get("patch").is_none());
        assert!(resp["warnings"][0].as_str().unwrap().contains("env T"), "{resp}");
        assert_eq!(r.verdict, Verdict::Skipped);
    }

    #[test]
    fn allows_other_kinds_and_operations_untouched() {
        let mut body: Value =
            serde_json::from_slice(&review_of(pod(json!({"sidekey.dev/inject": "true"}), json!([])))).unwrap();
        body["request"]["operation"] = json!("UPDATE");
        let r = review(&serde_json::to_vec(&body).unwrap(), &InjectorConfig::default());
        assert_eq!(response(&r), json!({"allowed": true, "uid": "705ab4f5-6393-11e8-b7cc-42010a800002"}));
    }

    #[test]
    fn malformed_or_oversized_bodies_are_400_not_panics() {
        for body in [
            &b"not json"[..],
            b"{}",
            b"[]",
            b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
            b"\xff\xfe",
        ] {
            let r = review(body, &InjectorConfig::default());
            assert_eq!((r.status, r.verdict), (400, Verdict::BadRequest), "{:?}", String::from_utf8_lossy(body));
        }
        let big = vec![b' '; MAX_BODY + 1];
        assert_eq!(review(&big, &InjectorConfig::default()).status, 400);
        // A request with a uid but garbage inside still echoes the uid.
        let r = review(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"kind":"Pod"},"operation":"CREATE","object":5}}"#, &InjectorConfig::default());
        assert_eq!(response(&r)["uid"], "u1");
    }
}
