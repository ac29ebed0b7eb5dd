//! AdmissionReview in, AdmissionReview out: the webhook's logic as a pure
//! function over the request body
//! (<https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/>).
//!
//! Business outcomes (an invalid pod, a policy refusal) are `allowed: false`
//! with a message, never an HTTP error; only a body that is not an
//! AdmissionReview gets a 400. The request `uid` is always echoed.

use base64::Engine;
use serde_json::{Value, json};
use sidekey::annotations::Problem;
use sidekey::config::InjectorConfig;
use sidekey::mutate::{self, Outcome, Warning};

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

/// The most JSON values (objects, arrays, strings, numbers, literals) a pod
/// may have for sidekey to review it. A real pod has hundreds to a few
/// thousand (one with 5,000 env vars about 20,000); a 3 MiB body of tiny
/// elements has over a million, and as a `serde_json::Value` a value costs
/// ~100 bytes with its key: this bound keeps the pod's tree to ~10 MiB.
pub const MAX_POD_ELEMENTS: usize = 100_000;

/// The part of an AdmissionReview the webhook needs, read without building
/// a value for anything else: unknown fields (`oldObject`, `userInfo`, …)
/// are skipped, and the pod stays raw text until its size is known.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(borrow, default)]
    request: Option<Request<'a>>,
}

#[derive(serde::Deserialize)]
struct Request<'a> {
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    kind: Option<GroupKind>,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(rename = "subResource", default)]
    sub_resource: Option<String>,
    #[serde(borrow, default)]
    object: Option<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize)]
struct GroupKind {
    #[serde(default)]
    group: String,
    #[serde(default)]
    kind: String,
}

/// Counts the JSON values in `text` (object keys included) in one pass,
/// allocating nothing.
fn json_elements(text: &[u8]) -> usize {
    let (mut n, mut in_string, mut escaped, mut in_scalar) = (0usize, false, false, false);
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                in_scalar = false;
                n += 1;
            }
            b'{' | b'[' => {
                in_scalar = false;
                n += 1;
            }
            b',' | b':' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t' => in_scalar = false,
            _ if !in_scalar => {
                in_scalar = true;
                n += 1;
            }
            _ => {}
        }
    }
    n
}

/// Handles one request body.
pub fn review(body: &[u8], config: &InjectorConfig) -> Reply {
    if body.len() > MAX_BODY {
        return bad_request(&format!("request body of {} bytes exceeds the {MAX_BODY}-byte limit", body.len()));
    }
    let Ok(doc) = serde_json::from_slice::<Envelope<'_>>(body) else {
        return bad_request("the body is not an AdmissionReview");
    };
    if doc.kind != "AdmissionReview" || doc.api_version != "admission.k8s.io/v1" {
        return bad_request("expected an admission.k8s.io/v1 AdmissionReview");
    }
    let Some(request) = doc.request else {
        return bad_request("the AdmissionReview has no request");
    };
    let Some(uid) = request.uid else {
        return bad_request("the AdmissionReview has no request.uid");
    };
    let namespace = request.namespace.unwrap_or_default();
    let is_pod_create = request.kind.as_ref().is_some_and(|k| k.kind == "Pod" && k.group.is_empty())
        && request.operation.as_deref() == Some("CREATE")
        && request.sub_resource.as_deref().is_none_or(str::is_empty);
    if !is_pod_create {
        return Reply {
            status: 200,
            body: answer(&uid, json!({"allowed": true})),
            verdict: Verdict::Skipped,
            uid,
            pod: namespace,
            warnings: 0,
            reason: None,
        };
    }
    let raw = request.object.map_or("null", |o| o.get());
    let elements = json_elements(raw.as_bytes());
    if elements > MAX_POD_ELEMENTS {
        let message = format!(
            "sidekey: the pod cannot be injected: it has {elements} JSON values; sidekey reviews pods of at most {MAX_POD_ELEMENTS}"
        );
        let response = json!({"allowed": false, "status": {"code": 400, "reason": "BadRequest", "message": message}});
        return Reply {
            status: 200,
            body: answer(&uid, response),
            verdict: Verdict::Denied,
            uid,
            pod: namespace,
            warnings: 0,
            reason: Some("pod too large".into()),
        };
    }
    let Ok(mut pod) = serde_json::from_str::<Value>(raw) else {
        return bad_request("request.object is not JSON");
    };
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
    if !pod.is_object() {
        return reply(200, answer(&uid, json!({"allowed": true})), Verdict::Skipped, 0, None);
    }
    let translation = match vault_k8s_translation(&mut pod, config) {
        Ok(t) => t,
        Err(problems) => return reply(200, denial(&uid, &problems), Verdict::Denied, 0, Some(fields(&problems))),
    };
    let mutated = match &translation {
        Some(t) => sidekey::vault_k8s::mutate(&mut pod, "", Some(&namespace), config, t),
        None => mutate::mutate_template_at(&mut pod, "", Some(&namespace), config).map_err(|i| i.problems),
    };
    match mutated {
        Ok((Outcome::Injected { warnings }, mut patch)) => {
            let mut notes = Vec::new();
            if let Some(t) = &translation {
                // vault-k8s, if it still runs, leaves the pod alone.
                mutate::set_annotation(&mut patch, &format!("{}agent-inject-status", t.prefix), "injected");
                // kubectl shows a warning in one line of 120 characters; the
                // whole note is in docs/vault-k8s.md and migrate's report.
                notes.extend(t.notes.iter().map(|n| Warning::clip(format!("sidekey: {n}"))));
            }
            let patch = serde_json::to_vec(&patch).unwrap_or_default();
            let n = warnings.len() + notes.len();
            let mut warnings: Vec<String> = warnings.iter().map(Warning::short).collect();
            warnings.extend(notes);
            reply(200, injected_answer(&uid, &patch, &warnings), Verdict::Injected, n, None)
        }
        Ok((Outcome::NotOptedIn, _)) => {
            let warnings: Vec<String> = mutate::env_secret_warnings(&pod).iter().map(Warning::short).collect();
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
        Err(problems) => reply(200, denial(&uid, &problems), Verdict::Denied, 0, Some(fields(&problems))),
    }
}

/// With vault-k8s compatibility on, a pod annotated for vault-k8s gets
/// the translated `sidekey.dev/*` annotations (in the review's copy only:
/// the patch does not carry them) and the translation back, for naming
/// problems and for its notes.
fn vault_k8s_translation(
    pod: &mut Value,
    config: &InjectorConfig,
) -> Result<Option<sidekey::vault_k8s::Translation>, Vec<Problem>> {
    use sidekey::vault_k8s;
    let annotations = pod.pointer("/metadata/annotations").and_then(Value::as_object);
    let Some(prefix) = vault_k8s::prefix_of(annotations).filter(|_| config.compatibility.vault_k8s) else {
        return Ok(None);
    };
    let Some(annotations) = pod.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) else {
        return Ok(None);
    };
    let mut t = vault_k8s::translate(annotations)?;
    if t.annotations.is_empty() {
        // vault.hashicorp.com/agent-inject: "false": sidekey's own annotations decide.
        return Ok(None);
    }
    // The review's copy needs only sidekey's annotations: the translated
    // ones move in, vault-k8s's (templates of up to 256 KiB each) leave.
    annotations.retain(|k, _| !k.starts_with(prefix));
    for (k, v) in std::mem::take(&mut t.annotations) {
        annotations.insert(k, Value::String(v));
    }
    Ok(Some(t))
}

fn denial(uid: &str, problems: &[Problem]) -> Vec<u8> {
    let message = format!("sidekey: the pod cannot be injected: {}", mutate::Invalid { problems: problems.to_vec() });
    answer(uid, json!({"allowed": false, "status": {"code": 400, "reason": "BadRequest", "message": message}}))
}

fn fields(problems: &[Problem]) -> String {
    problems.iter().map(|p| p.field.clone()).collect::<Vec<_>>().join(", ")
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
    fn counts_json_values_without_parsing() {
        assert_eq!(json_elements(br#"{"a": [1, 2.5, true, null], "b\"c": "x,]"}"#), 9);
        assert_eq!(json_elements(b"[]"), 1);
    }

    #[test]
    fn a_pod_of_a_million_tiny_values_is_denied_without_building_it() {
        let mut input = pod(json!({"sidekey.dev/inject": "true"}), json!([]));
        input["spec"]["containers"][0]["args"] = json!(vec![0; 1_000_000]);
        let body = review_of(input);
        assert!(body.len() <= MAX_BODY);
        let r = review(&body, &InjectorConfig::default());
        assert_eq!(r.verdict, Verdict::Denied);
        let msg = response(&r)["status"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains("at most 100000"), "{msg}");
        assert_eq!(response(&r)["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    }

    #[test]
    fn a_flood_of_unknown_annotations_gets_a_short_denial() {
        let mut ann = serde_json::Map::new();
        ann.insert("sidekey.dev/inject".into(), json!("true"));
        for i in 0..120_000 {
            ann.insert(format!("sidekey.dev/x{i}"), json!("1"));
        }
        let r = review(&review_of(pod(Value::Object(ann), json!([]))), &InjectorConfig::default());
        assert_eq!(r.verdict, Verdict::Denied);
        assert!(r.body.len() < 2048, "{} bytes", r.body.len());
        let mut ann = serde_json::Map::new();
        ann.insert("sidekey.dev/inject".into(), json!("true"));
        for i in 0..900 {
            ann.insert(format!("sidekey.dev/x{i}"), json!("1"));
        }
        let r = review(&review_of(pod(Value::Object(ann), json!([]))), &InjectorConfig::default());
        let msg = response(&r)["status"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains("and 880 more problems") && r.body.len() < 16 * 1024, "{} bytes", r.body.len());
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
    fn vault_k8s_pods_are_injected_only_with_compatibility_on() {
        let annotations = json!({
            "vault.hashicorp.com/agent-inject": "true",
            "vault.hashicorp.com/role": "web",
            "vault.hashicorp.com/agent-inject-secret-db.txt": "database/creds/web",
            "vault.hashicorp.com/agent-cache-enable": "true",
        });
        let input = pod(annotations, json!([]));
        let off = review(&review_of(input.clone()), &InjectorConfig::default());
        assert_eq!(off.verdict, Verdict::Skipped);
        let mut config = InjectorConfig::default();
        config.compatibility.vault_k8s = true;
        let r = review(&review_of(input.clone()), &config);
        assert_eq!(r.verdict, Verdict::Injected, "{}", String::from_utf8_lossy(&r.body));
        let resp = response(&r);
        let patch: sidekey::patch::Patch = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD.decode(resp["patch"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        let mut patched = input;
        sidekey::patch::apply(&mut patched, &patch).unwrap();
        let a = &patched["metadata"]["annotations"];
        assert_eq!(a["vault.hashicorp.com/agent-inject-status"], "injected");
        assert_eq!(a["sidekey.dev/status"], "injected");
        // The translation is not written into the pod; the agent's config carries it.
        assert!(a.get("sidekey.dev/secret-db.txt").is_none(), "{a}");
        let text = patched.to_string();
        assert!(text.contains("go-template") && text.contains("/vault/secrets"), "{text}");
        let warnings = resp["warnings"].to_string();
        assert!(warnings.contains("agent-cache-enable"), "{warnings}");
        // The OpenBao injector's spelling: the same injection, marked with its own status.
        let openbao = pod(
            json!({"openbao.openbao.org/agent-inject": "true", "openbao.openbao.org/role": "web",
                   "openbao.openbao.org/agent-inject-secret-db.txt": "database/creds/web"}),
            json!([]),
        );
        let r = review(&review_of(openbao.clone()), &config);
        assert_eq!(r.verdict, Verdict::Injected, "{}", String::from_utf8_lossy(&r.body));
        let patch: sidekey::patch::Patch = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD.decode(response(&r)["patch"].as_str().unwrap()).unwrap(),
        )
        .unwrap();
        let mut patched = openbao;
        sidekey::patch::apply(&mut patched, &patch).unwrap();
        assert_eq!(patched["metadata"]["annotations"]["openbao.openbao.org/agent-inject-status"], "injected");
        // Found by the admission fuzzer: a note longer than kubectl's line.
        let long = pod(
            json!({"vault.hashicorp.com/agent-inject": "true", "vault.hashicorp.com/role": "web",
                   "vault.hashicorp.com/agent-inject-secret-db.txt": "database/creds/web",
                   "vault.hashicorp.com/tls-secret": "vault-tls"}),
            json!([]),
        );
        let resp = response(&review(&review_of(long), &config));
        let warnings = resp["warnings"].as_array().unwrap();
        assert!(warnings.iter().any(|w| w.as_str().unwrap().contains("tls-secret")), "{warnings:?}");
        assert!(warnings.iter().all(|w| w.as_str().unwrap().chars().count() <= 120), "{warnings:?}");
        // Problems name what the user wrote.
        let bad = pod(
            json!({"vault.hashicorp.com/agent-inject": "true", "vault.hashicorp.com/agent-inject-secret-x": "kv/x",
                   "vault.hashicorp.com/agent-limits-mem": "lots", "vault.hashicorp.com/agent-configmap": "cm"}),
            json!([]),
        );
        let r = review(&review_of(bad), &config);
        assert_eq!(r.verdict, Verdict::Denied);
        let msg = response(&r)["status"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains("vault.hashicorp.com/agent-configmap"), "{msg}");
        let bad = pod(
            json!({"vault.hashicorp.com/agent-inject": "true", "vault.hashicorp.com/agent-inject-secret-x": "kv/x",
                   "vault.hashicorp.com/agent-limits-mem": "lots"}),
            json!([]),
        );
        let msg = response(&review(&review_of(bad), &config))["status"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains("annotation vault.hashicorp.com/agent-limits-mem:"), "{msg}");
    }

    #[test]
    fn a_vault_k8s_template_is_held_to_the_namespace_policy() {
        let mut config = InjectorConfig::from_yaml(
            "policy:\n  rules:\n    - namespaces: [shop]\n      references: [\"vault:secret/data/shop/*\"]\n",
        )
        .unwrap();
        config.compatibility.vault_k8s = true;
        let with = |template: &str| {
            pod(
                json!({"vault.hashicorp.com/agent-inject": "true", "vault.hashicorp.com/role": "web",
                       "vault.hashicorp.com/agent-inject-secret-app.conf": "secret/data/shop/app",
                       "vault.hashicorp.com/agent-inject-template-app.conf": template}),
                json!([]),
            )
        };
        // The annotation's path is allowed; the template reads elsewhere.
        let r =
            review(&review_of(with(r#"{{ with secret "secret/data/hr/db" }}{{ .Data.data.pw }}{{ end }}"#)), &config);
        assert_eq!(r.verdict, Verdict::Denied);
        let msg = response(&r)["status"]["message"].as_str().unwrap().to_owned();
        assert!(
            msg.contains("annotation vault.hashicorp.com/agent-inject-template-app.conf: reference vault:secret/data/hr/db is not allowed"),
            "{msg}"
        );
        let r =
            review(&review_of(with(r#"{{ with secret "auth/token/lookup-self" }}{{ .Data.id }}{{ end }}"#)), &config);
        let msg = response(&r)["status"]["message"].as_str().unwrap().to_owned();
        assert!(
            msg.contains("agent-inject-template-app.conf: reference vault:auth/token/lookup-self is not allowed"),
            "{msg}"
        );
        let ok = review(
            &review_of(with(r#"{{ with secret "secret/data/shop/app" }}{{ .Data.data.pw }}{{ end }}"#)),
            &config,
        );
        assert_eq!(ok.verdict, Verdict::Injected, "{}", String::from_utf8_lossy(&ok.body));
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
