//! An OpenBao dev server (same API as Vault) with helpers: on the host's
//! loopback, or as a pod in a [`Cluster`] behind a Service that serves TLS
//! from a private CA, the way users run Vault in their clusters.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::{Cluster, KubeApi, Postgres, Process, TcpProxy, free_port, http, tool, wait_until};

/// A running `bao server -dev` with a known root token and a file audit
/// device (every request is logged, values HMAC-ed).
pub struct OpenBao {
    /// `http://127.0.0.1:PORT`: where the test's own calls go.
    pub addr: String,
    /// The root token.
    pub token: String,
    /// In a cluster: the address pods use (`https://openbao.vault.svc:8200`)
    /// and the PEM of the CA that signed its certificate.
    pub in_cluster: Option<(String, String)>,
    server: Server,
}

enum Server {
    Host { process: Process, _dir: TempDir, audit: PathBuf },
    Pod { kubeconfig: PathBuf, _forward: TcpProxy },
}

/// Where the in-cluster OpenBao runs.
const POD_NS: &str = "vault";
const POD: &str = "openbao-0";

impl OpenBao {
    /// Starts a dev server (in-memory storage, KV v2 at `secret/`).
    pub fn start() -> OpenBao {
        let bao = tool("SIDEKEY_BAO");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let token = "root-test-token".to_owned();
        // OpenBao 2 only takes audit devices from its configuration file.
        // Raw, not HMAC'd: a test that looks for a value in the audit log
        // must be able to find it.
        let audit = dir.path().join("audit.log");
        let config = dir.path().join("audit.hcl");
        std::fs::write(
            &config,
            format!(
                "audit \"file\" \"file\" {{\n  options {{\n    file_path = {:?}\n    log_raw = \"true\"\n  }}\n}}\n",
                audit
            ),
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
        OpenBao { addr, token, in_cluster: None, server: Server::Host { process, _dir: dir, audit } }
    }

    /// Runs OpenBao as a pod in namespace `vault` of `cluster` (which
    /// enforces Pod Security `restricted`), behind Service `openbao` on port
    /// 8200 with TLS from a private CA made here. The test's own calls use a
    /// second, plain listener on the pod's address, forwarded from the
    /// host's loopback (the Service does not expose it); the audit log goes
    /// to the pod's stdout.
    pub fn in_cluster(cluster: &Cluster) -> OpenBao {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "openbao-test-ca");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_pem = ca.clone().self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, &ca_key);
        let key = KeyPair::generate().unwrap();
        let names = ["openbao.vault.svc", "openbao.vault.svc.cluster.local", "openbao.vault", "openbao"];
        let mut p = CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        let cert = p.signed_by(&key, &issuer).unwrap();

        let token = "root-test-token".to_owned();
        let config = "listener \"tcp\" {\n  address = \"0.0.0.0:8200\"\n  tls_cert_file = \"/tls/tls.crt\"\n  tls_key_file = \"/tls/tls.key\"\n}\n\
                      audit \"file\" \"stdout\" {\n  options {\n    file_path = \"stdout\"\n  }\n}\n";
        let restricted = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
            "readOnlyRootFilesystem": true, "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}});
        let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": POD_NS,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "openbao-tls", "namespace": POD_NS},
                "type": "kubernetes.io/tls", "stringData": {"tls.crt": cert.pem(), "tls.key": key.serialize_pem()}},
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "openbao-config", "namespace": POD_NS},
                "data": {"openbao.hcl": config}},
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "openbao", "namespace": POD_NS},
                "spec": {"selector": {"app": "openbao"}, "ports": [{"name": "https", "port": 8200, "targetPort": 8200}]}},
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": POD, "namespace": POD_NS, "labels": {"app": "openbao"}},
                "spec": {"automountServiceAccountToken": false,
                    "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532},
                    "containers": [{"name": "openbao", "image": "sidekey.test/openbao:1", "imagePullPolicy": "Never",
                        "args": ["server", "-dev", "-dev-no-store-token", "-log-level=warn",
                                 format!("-dev-root-token-id={token}"), "-dev-listen-address=0.0.0.0:8201",
                                 "-config=/config/openbao.hcl"],
                        "env": [{"name": "HOME", "value": "/tmp"}, {"name": "SKIP_SETCAP", "value": "1"}],
                        "securityContext": restricted,
                        "readinessProbe": {"tcpSocket": {"port": 8200}, "periodSeconds": 1},
                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                        "volumeMounts": [{"name": "tls", "mountPath": "/tls", "readOnly": true},
                                         {"name": "config", "mountPath": "/config", "readOnly": true},
                                         {"name": "tmp", "mountPath": "/tmp"}]}],
                    "volumes": [{"name": "tls", "secret": {"secretName": "openbao-tls"}},
                                {"name": "config", "configMap": {"name": "openbao-config"}},
                                {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}]}}
        ]});
        let out = cluster.api.kubectl_stdin(&["apply", "-f", "-"], &objects.to_string());
        assert!(out.status.success(), "apply OpenBao: {}", String::from_utf8_lossy(&out.stderr));
        let pod_ip = || {
            let out = cluster.api.kubectl(&["-n", POD_NS, "get", "pod", POD, "-o", "jsonpath={.status.podIP}"]);
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let diagnose = || {
            let out = cluster.api.kubectl(&["-n", POD_NS, "describe", "pod", POD]);
            let logs = cluster.api.kubectl(&["-n", POD_NS, "logs", POD]);
            format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&logs.stdout))
        };
        wait_until("the OpenBao pod's address", Duration::from_secs(60), || !pod_ip().is_empty(), diagnose);
        let forward = TcpProxy::start_in(&format!("{}:8201", pod_ip()), Some(&cluster.node().netns()));
        let addr = forward.url();
        let agent = http();
        wait_until(
            "OpenBao in the cluster to be ready",
            Duration::from_secs(60),
            || agent.get(format!("{addr}/v1/sys/health")).call().is_ok_and(|r| r.status() == 200),
            diagnose,
        );
        OpenBao {
            addr,
            token,
            in_cluster: Some(("https://openbao.vault.svc:8200".into(), ca_pem)),
            server: Server::Pod { kubeconfig: cluster.api.kubeconfig.clone(), _forward: forward },
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        match &self.server {
            Server::Host { process, .. } => process.log(),
            Server::Pod { kubeconfig, .. } => pod_log(kubeconfig),
        }
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
        self.request(token, "", method, path, body)
    }

    /// Calls the HTTP API in OpenBao namespace `namespace` (`org/team`; `""`:
    /// the root) with the root token.
    ///
    /// # Errors
    /// The status and body when the status is not 2xx.
    pub fn api_in(&self, namespace: &str, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        self.request(&self.token, namespace, method, path, body)
    }

    fn request(&self, token: &str, ns: &str, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/v1/{path}", self.addr);
        let agent = http();
        let (t, n) = ("X-Vault-Token", "X-Vault-Namespace");
        let resp = match (method, body) {
            ("GET", _) => agent.get(&url).header(t, token).header(n, ns).call(),
            ("DELETE", _) => agent.delete(&url).header(t, token).header(n, ns).call(),
            ("LIST", _) => agent.get(format!("{url}?list=true")).header(t, token).header(n, ns).call(),
            (_, body) => agent.post(&url).header(t, token).header(n, ns).send_json(body.unwrap_or_else(|| json!({}))),
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
        let text = match &self.server {
            Server::Host { audit, .. } => std::fs::read_to_string(audit).unwrap_or_default(),
            Server::Pod { kubeconfig, .. } => pod_log(kubeconfig),
        };
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
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
                "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@{}:{}/postgres?sslmode=disable", pg.host, pg.port),
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

    /// Enables JWT auth at `auth/jwt`, trusting the tokens `kube` signs
    /// (its public key and issuer: OpenBao never calls the cluster), with a
    /// role `role` for service account `namespace/sa` and `audience`.
    pub fn enable_jwt_auth(
        &self,
        kube: &KubeApi,
        role: &str,
        namespace: &str,
        sa: &str,
        audience: &str,
        policies: &[&str],
    ) {
        self.enable_jwt_auth_in("", kube, role, &format!("system:serviceaccount:{namespace}:{sa}"), audience, policies);
    }

    /// [`OpenBao::enable_jwt_auth`] inside OpenBao namespace `bao_ns` (`""`:
    /// the root), for tokens whose subject is `subject`.
    pub fn enable_jwt_auth_in(
        &self,
        bao_ns: &str,
        kube: &KubeApi,
        role: &str,
        subject: &str,
        audience: &str,
        policies: &[&str],
    ) {
        let _ = self.api_in(bao_ns, "POST", "sys/auth/jwt", Some(json!({"type": "jwt"})));
        let config =
            json!({"jwt_validation_pubkeys": [kube.service_account_public_key()], "bound_issuer": KubeApi::ISSUER});
        self.api_in(bao_ns, "POST", "auth/jwt/config", Some(config)).unwrap();
        let role_body = json!({
            "role_type": "jwt",
            "bound_audiences": [audience],
            "user_claim": "sub",
            "bound_subject": subject,
            "token_policies": policies,
            "token_ttl": "1h",
        });
        self.api_in(bao_ns, "POST", &format!("auth/jwt/role/{role}"), Some(role_body)).unwrap();
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
                "kubernetes_host": kube.url_for_servers(),
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

/// The in-cluster OpenBao's stdout (its log and audit entries).
fn pod_log(kubeconfig: &std::path::Path) -> String {
    let out = Command::new("kubectl")
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .args(["-n", POD_NS, "logs", POD])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}
