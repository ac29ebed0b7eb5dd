//! An OpenBao dev server (same API as Vault) with helpers.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{KubeApi, Postgres, Process, free_port, http, tool, wait_until};

/// A running `bao server -dev` on 127.0.0.1 with a known root token and a
/// file audit device (every request is logged, values HMAC-ed).
pub struct OpenBao {
    /// `http://127.0.0.1:PORT`.
    pub addr: String,
    /// The root token.
    pub token: String,
    process: Process,
    _dir: TempDir,
    audit: PathBuf,
}

impl OpenBao {
    /// Starts a dev server (in-memory storage, KV v2 at `secret/`).
    pub fn start() -> OpenBao {
        let bao = tool("SIDEKEY_BAO");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let token = "root-test-token".to_owned();
        // OpenBao 2 only takes audit devices from its configuration file.
        let audit = dir.path().join("audit.log");
        let config = dir.path().join("audit.hcl");
        std::fs::write(
            &config,
            format!("audit \"file\" \"file\" {{\n  options {{\n    file_path = {:?}\n  }}\n}}\n", audit),
        )
        .unwrap();
        let mut cmd = Command::new(bao);
        cmd.args(["server", "-dev", "-dev-no-store-token", "-log-level=warn"])
            .arg(format!("-config={}", config.display()))
            .arg(format!("-dev-root-token-id={token}"))
            .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
            .env("HOME", dir.path())
            .env_remove("VAULT_ADDR")
            .env_remove("BAO_ADDR");
        let process = Process::spawn("openbao", cmd, dir.path());
        let addr = format!("http://127.0.0.1:{port}");
        let agent = http();
        wait_until(
            "OpenBao to be ready",
            Duration::from_secs(30),
            || {
                process.assert_running();
                agent.get(format!("{addr}/v1/sys/health")).call().is_ok_and(|r| r.status() == 200)
            },
            || process.log(),
        );
        OpenBao { addr, token, process, _dir: dir, audit }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Calls the HTTP API (`path` without `/v1/`) with the root token.
    ///
    /// # Errors
    /// The status and body when the status is not 2xx.
    pub fn api(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.api_with_token(&self.token, method, path, body)
    }

    /// Calls the HTTP API with `token`.
    ///
    /// # Errors
    /// The status and body when the status is not 2xx.
    pub fn api_with_token(&self, token: &str, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/v1/{path}", self.addr);
        let agent = http();
        let resp = match (method, body) {
            ("GET", _) => agent.get(&url).header("X-Vault-Token", token).call(),
            ("DELETE", _) => agent.delete(&url).header("X-Vault-Token", token).call(),
            ("LIST", _) => agent.get(format!("{url}?list=true")).header("X-Vault-Token", token).call(),
            (_, body) => agent.post(&url).header("X-Vault-Token", token).send_json(body.unwrap_or_else(|| json!({}))),
        };
        let mut resp = resp.map_err(|e| format!("{method} {path}: {e}"))?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        if !(200..300).contains(&status) {
            return Err(format!("{method} {path}: HTTP {status}: {text}"));
        }
        Ok(if text.trim().is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::Null) })
    }

    /// Writes a KV v2 secret at `secret/<path>`; returns its new version.
    pub fn kv_put(&self, path: &str, data: Value) -> u64 {
        let r = self.api("POST", &format!("secret/data/{path}"), Some(json!({ "data": data }))).unwrap();
        r["data"]["version"].as_u64().unwrap()
    }

    /// Reads the current data of the KV v2 secret at `secret/<path>`.
    pub fn kv_get(&self, path: &str) -> Value {
        self.api("GET", &format!("secret/data/{path}"), None).unwrap()["data"]["data"].clone()
    }

    /// Writes an ACL policy.
    pub fn put_policy(&self, name: &str, hcl: &str) {
        self.api("POST", &format!("sys/policies/acl/{name}"), Some(json!({ "policy": hcl }))).unwrap();
    }

    /// Creates a token with `policies` and `ttl`; returns it.
    pub fn create_token(&self, policies: &[&str], ttl: &str) -> String {
        let r = self.api("POST", "auth/token/create", Some(json!({"policies": policies, "ttl": ttl}))).unwrap();
        r["auth"]["client_token"].as_str().unwrap().to_owned()
    }

    /// Every audit entry so far (requests and responses).
    pub fn audit_entries(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// How many requests (not responses) the audit log holds whose path
    /// satisfies `pred`, e.g. `|p| p == "secret/data/app"`.
    pub fn count_requests(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.audit_entries()
            .iter()
            .filter(|e| e["type"] == "request" && e["request"]["path"].as_str().is_some_and(&pred))
            .count()
    }

    /// How many read requests (GETs) the audit log holds for exactly `path`.
    pub fn count_reads(&self, path: &str) -> usize {
        self.audit_entries()
            .iter()
            .filter(|e| e["type"] == "request" && e["request"]["operation"] == "read" && e["request"]["path"] == path)
            .count()
    }

    /// Enables the database engine at `database/` against `pg` with a
    /// connection `pg` and a role `role` whose users are created with the
    /// given TTLs (seconds), e.g. 10 and 30.
    pub fn enable_postgres(&self, pg: &Postgres, role: &str, default_ttl: u64, max_ttl: u64) {
        let _ = self.api("POST", "sys/mounts/database", Some(json!({"type": "database"})));
        self.api(
            "POST",
            "database/config/pg",
            Some(json!({
                "plugin_name": "postgresql-database-plugin",
                "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable", pg.port),
                "username": pg.superuser,
                "password": pg.password,
                "allowed_roles": "*",
                "verify_connection": true,
            })),
        )
        .unwrap();
        self.api(
            "POST",
            &format!("database/roles/{role}"),
            Some(json!({
                "db_name": "pg",
                "creation_statements": [
                    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
                    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";"
                ],
                "default_ttl": default_ttl,
                "max_ttl": max_ttl,
            })),
        )
        .unwrap();
    }

    /// Enables Kubernetes auth at `auth/kubernetes` pointed at `kube`, with a
    /// role `role` bound to service account `sa` in `namespace`, the token
    /// `audience`, and `policies`.
    pub fn enable_kubernetes_auth(
        &self,
        kube: &KubeApi,
        role: &str,
        namespace: &str,
        sa: &str,
        audience: &str,
        policies: &[&str],
    ) {
        let _ = self.api("POST", "sys/auth/kubernetes", Some(json!({"type": "kubernetes"})));
        self.api(
            "POST",
            "auth/kubernetes/config",
            Some(json!({
                "kubernetes_host": kube.url,
                "kubernetes_ca_cert": kube.ca_pem,
                "token_reviewer_jwt": kube.admin_token,
                "disable_local_ca_jwt": true,
            })),
        )
        .unwrap();
        self.api(
            "POST",
            &format!("auth/kubernetes/role/{role}"),
            Some(json!({
                "bound_service_account_names": [sa],
                "bound_service_account_namespaces": [namespace],
                "audience": audience,
                "token_policies": policies,
                "token_ttl": "1h",
            })),
        )
        .unwrap();
    }

    /// Logs in with Kubernetes auth; returns the client token.
    ///
    /// # Errors
    /// The API error when the login is refused.
    pub fn kubernetes_login(&self, role: &str, jwt: &str) -> Result<String, String> {
        let r = self.api_with_token("", "POST", "auth/kubernetes/login", Some(json!({"role": role, "jwt": jwt})))?;
        Ok(r["auth"]["client_token"].as_str().unwrap_or_default().to_owned())
    }
}
