//! `moto_server`: AWS Secrets Manager, IAM and STS on loopback, with moto's
//! request recorder so tests can count calls by API action.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{Process, free_port, http, tool, wait_until};

/// A running moto server.
pub struct Moto {
    /// `http://127.0.0.1:PORT`, the endpoint override for the AWS SDK.
    pub endpoint: String,
    /// The region the helpers use.
    pub region: String,
    process: Process,
    _dir: TempDir,
}

fn auth(service: &str, region: &str) -> String {
    // moto reads the region from the credential scope and does not check
    // signatures unless IAM enforcement is on.
    format!(
        "AWS4-HMAC-SHA256 Credential=testing/20260101/{region}/{service}/aws4_request, SignedHeaders=host, Signature=0"
    )
}

impl Moto {
    /// Starts moto and its request recorder.
    pub fn start() -> Moto {
        let dir = tempfile::tempdir().unwrap();
        let agent = http();
        // A free port can be taken again before moto binds it (another
        // test's outgoing connection gets it from the same ephemeral
        // range): then moto exits at once saying so, and another port is tried.
        let mut attempts = 0;
        let (process, endpoint) = loop {
            attempts += 1;
            let port = free_port();
            let mut cmd = Command::new(tool("SIDEKEY_MOTO_SERVER"));
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .current_dir(dir.path())
                .env("MOTO_RECORDER_FILEPATH", dir.path().join("recording.jsonl"));
            let process = Process::spawn("moto", cmd, dir.path());
            let endpoint = format!("http://127.0.0.1:{port}");
            let mut taken = false;
            wait_until(
                "moto to be ready",
                Duration::from_secs(60),
                || {
                    if !process.running() && attempts < 5 && process.log().contains("in use") {
                        taken = true;
                        return true;
                    }
                    process.assert_running();
                    agent.get(format!("{endpoint}/moto-api/")).call().is_ok_and(|r| r.status() == 200)
                },
                || process.log(),
            );
            if !taken {
                break (process, endpoint);
            }
        };
        let r = agent.post(format!("{endpoint}/moto-api/recorder/start-recording")).send_empty().unwrap();
        assert_eq!(r.status(), 200);
        Moto { endpoint, region: "us-east-1".into(), process, _dir: dir }
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Calls a Secrets Manager action (JSON protocol).
    ///
    /// # Errors
    /// The status and body on an error response.
    pub fn secretsmanager(&self, action: &str, body: Value) -> Result<Value, String> {
        let mut r = http()
            .post(format!("{}/", self.endpoint))
            .header("X-Amz-Target", format!("secretsmanager.{action}"))
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("Authorization", auth("secretsmanager", &self.region))
            .send_json(body)
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        if status != 200 {
            return Err(format!("{action}: HTTP {status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }

    /// Creates a secret with a string value; returns its ARN.
    pub fn create_secret(&self, name: &str, value: &str) -> String {
        let r = self.secretsmanager("CreateSecret", json!({"Name": name, "SecretString": value})).unwrap();
        r["ARN"].as_str().unwrap().to_owned()
    }

    /// Creates a secret with a binary value (base64 on the wire); returns its ARN.
    pub fn create_binary_secret(&self, name: &str, base64_value: &str) -> String {
        let r = self.secretsmanager("CreateSecret", json!({"Name": name, "SecretBinary": base64_value})).unwrap();
        r["ARN"].as_str().unwrap().to_owned()
    }

    /// Puts a new current version; returns its version id.
    pub fn put_secret_value(&self, name: &str, value: &str) -> String {
        let r = self.secretsmanager("PutSecretValue", json!({"SecretId": name, "SecretString": value})).unwrap();
        r["VersionId"].as_str().unwrap().to_owned()
    }

    /// Deletes a secret without a recovery window.
    pub fn delete_secret(&self, name: &str) {
        self.secretsmanager("DeleteSecret", json!({"SecretId": name, "ForceDeleteWithoutRecovery": true})).unwrap();
    }

    /// Calls an IAM or STS action (query protocol); returns the XML body.
    ///
    /// # Errors
    /// The status and body on an error response.
    pub fn query(&self, service: &str, version: &str, action: &str, params: &[(&str, &str)]) -> Result<String, String> {
        let mut form: Vec<(&str, &str)> = vec![("Action", action), ("Version", version)];
        form.extend_from_slice(params);
        let mut r = http()
            .post(format!("{}/", self.endpoint))
            .header("Authorization", auth(service, &self.region))
            .send_form(form)
            .map_err(|e| e.to_string())?;
        let status = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        if status != 200 {
            return Err(format!("{service} {action}: HTTP {status}: {text}"));
        }
        Ok(text)
    }

    /// Creates an IAM role that web identities may assume; returns its ARN.
    pub fn create_web_identity_role(&self, name: &str) -> String {
        let trust = json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Federated": "arn:aws:iam::123456789012:oidc-provider/kubernetes"},
                           "Action": "sts:AssumeRoleWithWebIdentity"}]
        })
        .to_string();
        let xml = self
            .query("iam", "2010-05-08", "CreateRole", &[("RoleName", name), ("AssumeRolePolicyDocument", &trust)])
            .unwrap();
        let start = xml.find("<Arn>").unwrap() + 5;
        let end = xml[start..].find("</Arn>").unwrap() + start;
        xml[start..end].to_owned()
    }

    /// Creates an IAM user with an inline policy allowing `actions` on every
    /// resource; returns its access key id and secret access key.
    pub fn create_user(&self, name: &str, actions: &[&str]) -> (String, String) {
        self.query("iam", "2010-05-08", "CreateUser", &[("UserName", name)]).unwrap();
        self.put_user_policy(name, actions);
        let xml = self.query("iam", "2010-05-08", "CreateAccessKey", &[("UserName", name)]).unwrap();
        let field = |tag: &str| {
            let start = xml.find(&format!("<{tag}>")).unwrap() + tag.len() + 2;
            let end = xml[start..].find(&format!("</{tag}>")).unwrap() + start;
            xml[start..end].to_owned()
        };
        (field("AccessKeyId"), field("SecretAccessKey"))
    }

    /// Replaces the user's inline policy: `actions` allowed on every resource
    /// (none: the policy allows nothing).
    pub fn put_user_policy(&self, name: &str, actions: &[&str]) {
        let statements: Vec<Value> =
            actions.iter().map(|a| json!({"Effect": "Allow", "Action": a, "Resource": "*"})).collect();
        let policy = json!({"Version": "2012-10-17", "Statement": statements}).to_string();
        self.query(
            "iam",
            "2010-05-08",
            "PutUserPolicy",
            &[("UserName", name), ("PolicyName", "sidekey-test"), ("PolicyDocument", &policy)],
        )
        .unwrap();
    }

    /// Turns IAM enforcement on (every request after this one must be signed
    /// by a known user and allowed by its policies) or off again. The
    /// helpers here sign with fake keys: call them with enforcement off.
    pub fn enforce_iam(&self, on: bool) {
        http().post(format!("{}/moto-api/reset-auth", self.endpoint)).send(if on { "0" } else { "inf" }).unwrap();
    }

    /// Requests served since start, by API action (`GetSecretValue`,
    /// `DescribeSecret`, `AssumeRoleWithWebIdentity`, …).
    pub fn request_counts(&self) -> BTreeMap<String, usize> {
        let text = http()
            .get(format!("{}/moto-api/recorder/download-recording", self.endpoint))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let Ok(entry) = serde_json::from_str::<Value>(line) else { continue };
            let action = if let Some(target) = entry["headers"]["X-Amz-Target"].as_str() {
                target.rsplit('.').next().unwrap_or(target).to_owned()
            } else {
                let body = entry["body"].as_str().unwrap_or("");
                let body = if entry["body_encoded"] == true { decode_base64(body) } else { body.to_owned() };
                match body.split('&').find_map(|kv| kv.strip_prefix("Action=")) {
                    Some(a) => a.to_owned(),
                    None => continue,
                }
            };
            *counts.entry(action).or_insert(0) += 1;
        }
        counts
    }
}

fn decode_base64(s: &str) -> String {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}
