//! OpenBao (same API as Vault) with helpers: a dev server on the host's
//! loopback, or in a [`Cluster`] a three-server Raft cluster behind a
//! Service that serves TLS from a private CA, the way users run Vault in
//! their clusters.

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
    /// The `X-Vault-Index` of the last write (a Raft cluster's).
    index: std::sync::Mutex<Option<String>>,
}

enum Server {
    Host { process: Process, _dir: TempDir, audit: PathBuf },
    Pod { kubeconfig: PathBuf, _forward: TcpProxy, unseal_key: String },
}

impl Server {
    /// Sends the unseal key to the server behind `url` (errors are the
    /// caller's to wait out: it may not have joined yet).
    fn unseal(&self, url: &str) {
        if let Server::Pod { unseal_key, .. } = self {
            let _ = http().put(format!("{url}/v1/sys/unseal")).send_json(json!({ "key": unseal_key }));
        }
    }
}

/// Where the in-cluster OpenBao runs.
const POD_NS: &str = "vault";
/// How many OpenBao servers the in-cluster Raft cluster has.
pub const HA_REPLICAS: usize = 3;
/// The servers' plain listener, for the test's own calls only (no Service
/// the pods use exposes it).
const PLAIN_PORT: u16 = 8202;

fn pod_name(i: usize) -> String {
    format!("openbao-{i}")
}

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
        OpenBao {
            addr,
            token,
            in_cluster: None,
            server: Server::Host { process, _dir: dir, audit },
            index: Default::default(),
        }
    }

    /// Runs OpenBao in namespace `vault` of `cluster` (which enforces Pod
    /// Security `restricted`) as production runs it: a StatefulSet of
    /// [`HA_REPLICAS`] servers with integrated (Raft) storage, joined by
    /// `retry_join`, initialized here with one Shamir key share that this
    /// struct keeps to unseal a restarted server, behind Service `openbao`
    /// on port 8200 with TLS from a private CA made here (standbys forward
    /// to the active server). The test's own calls go through a second
    /// Service to a plain listener of the ready (unsealed) servers,
    /// forwarded from the host's loopback; audit entries go to each
    /// server's stdout.
    pub fn in_cluster(cluster: &Cluster) -> OpenBao {
        let objects = ha_objects(&tls_for_cluster());
        let out = cluster.api.kubectl_stdin(&["apply", "-f", "-"], &objects.0.to_string());
        assert!(out.status.success(), "apply OpenBao: {}", String::from_utf8_lossy(&out.stderr));
        let kubeconfig = cluster.api.kubeconfig.clone();
        let diagnose = || pods_log(&kubeconfig);
        let pod_ip = |pod: &str| {
            let out = cluster.api.kubectl(&["-n", POD_NS, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"]);
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let netns = cluster.node().netns();
        let direct = |pod: &str| {
            wait_until(&format!("{pod}'s address"), Duration::from_secs(90), || !pod_ip(pod).is_empty(), diagnose);
            TcpProxy::start_in(&format!("{}:{PLAIN_PORT}", pod_ip(pod)), Some(&netns))
        };
        let first = direct(&pod_name(0));
        let agent = http();
        let health = |url: &str| agent.get(format!("{url}/v1/sys/health")).call().map(|r| r.status().as_u16());
        wait_until("openbao-0 to answer", Duration::from_secs(60), || health(&first.url()).is_ok(), diagnose);
        let init = agent
            .put(format!("{}/v1/sys/init", first.url()))
            .send_json(json!({"secret_shares": 1, "secret_threshold": 1}))
            .map(|mut r| r.body_mut().read_json::<Value>().unwrap_or_default())
            .unwrap();
        let unseal_key = init["keys_base64"][0].as_str().expect("sys/init answers a key").to_owned();
        let token = init["root_token"].as_str().expect("sys/init answers a root token").to_owned();
        let server = Server::Pod { kubeconfig: kubeconfig.clone(), _forward: first, unseal_key };
        for i in 0..HA_REPLICAS {
            let pod = pod_name(i);
            let proxy = direct(&pod);
            // A standby joins through retry_join, then takes the same key.
            wait_until(
                &format!("{pod} to be unsealed"),
                Duration::from_secs(90),
                || {
                    server.unseal(&proxy.url());
                    health(&proxy.url()).is_ok_and(|s| s == 200 || s == 429)
                },
                diagnose,
            );
        }
        let test_ip =
            cluster.api.kubectl_ok(&["-n", POD_NS, "get", "svc", "openbao-test", "-o", "jsonpath={.spec.clusterIP}"]);
        let forward = TcpProxy::start_in(&format!("{}:{PLAIN_PORT}", test_ip.trim()), Some(&netns));
        let addr = forward.url();
        let server = match server {
            Server::Pod { kubeconfig, unseal_key, .. } => Server::Pod { kubeconfig, _forward: forward, unseal_key },
            host @ Server::Host { .. } => host,
        };
        let bao = OpenBao {
            addr,
            token,
            in_cluster: Some(("https://openbao.vault.svc:8200".into(), objects.1)),
            server,
            index: Default::default(),
        };
        wait_until(
            "the OpenBao cluster to serve through its Service",
            Duration::from_secs(60),
            || bao.api("POST", "sys/mounts/secret", Some(json!({"type": "kv", "options": {"version": "2"}}))).is_ok(),
            diagnose,
        );
        // A new KV v2 mount takes a moment before it takes writes, on each
        // server: the Service picks one per connection, so several writes
        // in a row must succeed.
        let mut in_a_row = 0;
        let probe = || bao.api("POST", "secret/data/sidekey-test-probe", Some(json!({"data": {"ok": "1"}}))).is_ok();
        wait_until(
            "KV v2 at secret/ on every server",
            Duration::from_secs(30),
            || {
                in_a_row = if probe() { in_a_row + 1 } else { 0 };
                in_a_row >= 3 * HA_REPLICAS
            },
            diagnose,
        );
        bao.api("DELETE", "secret/metadata/sidekey-test-probe", None).unwrap();
        bao
    }

    /// The in-cluster server that holds the Raft leadership now
    /// (`openbao-N`), from `sys/leader`.
    pub fn active_pod(&self) -> Option<String> {
        let r = self.api("GET", "sys/leader", None).ok()?;
        let addr = r["leader_address"].as_str()?;
        addr.trim_start_matches("https://").split('.').next().map(str::to_owned).filter(|p| p.starts_with("openbao-"))
    }

    /// Unseals the in-cluster server `pod` (after its container restarted)
    /// and waits until it serves as a standby again.
    pub fn unseal_pod(&self, cluster: &Cluster, pod: &str) {
        let kubeconfig = cluster.api.kubeconfig.clone();
        let ip = cluster.api.kubectl_ok(&["-n", POD_NS, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"]);
        let proxy = TcpProxy::start_in(&format!("{}:{PLAIN_PORT}", ip.trim()), Some(&cluster.node().netns()));
        let agent = http();
        wait_until(
            &format!("{pod} to be unsealed again"),
            Duration::from_secs(60),
            || {
                self.server.unseal(&proxy.url());
                // Unsealed, and it knows the active server (until then it
                // answers 500 "active cluster node not found").
                let leader = agent
                    .get(format!("{}/v1/sys/leader", proxy.url()))
                    .call()
                    .ok()
                    .and_then(|mut r| r.body_mut().read_json::<Value>().ok());
                let serving = agent
                    .get(format!("{}/v1/sys/health", proxy.url()))
                    .call()
                    .is_ok_and(|r| r.status() == 200 || r.status() == 429);
                serving && leader.is_some_and(|l| l["leader_address"].as_str().is_some_and(|a| !a.is_empty()))
            },
            || pods_log(&kubeconfig),
        );
    }

    /// Unseals every in-cluster server (after they all restarted, as a
    /// node's reboot restarts them: none can lead until a quorum is
    /// unsealed) and waits until the cluster has an active server.
    pub fn unseal_all(&self, cluster: &Cluster) {
        let kubeconfig = cluster.api.kubeconfig.clone();
        let netns = cluster.node().netns();
        let ip = |pod: &str| {
            let out = cluster.api.kubectl(&["-n", POD_NS, "get", "pod", pod, "-o", "jsonpath={.status.podIP}"]);
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        // By pod: a restarted pod may have a new address.
        let mut proxies: Vec<(String, String, TcpProxy)> = Vec::new();
        wait_until(
            "every OpenBao server unsealed and one active",
            Duration::from_secs(120),
            || {
                for i in 0..HA_REPLICAS {
                    let pod = pod_name(i);
                    let addr = ip(&pod);
                    if addr.is_empty() {
                        continue;
                    }
                    let target = format!("{addr}:{PLAIN_PORT}");
                    if !proxies.iter().any(|(p, t, _)| *p == pod && *t == target) {
                        proxies.retain(|(p, _, _)| *p != pod);
                        let proxy = TcpProxy::start_in(&target, Some(&netns));
                        proxies.push((pod, target, proxy));
                    }
                }
                for (_, _, proxy) in &proxies {
                    self.server.unseal(&proxy.url());
                }
                proxies.len() >= HA_REPLICAS && self.active_pod().is_some()
            },
            || pods_log(&kubeconfig),
        );
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        match &self.server {
            Server::Host { process, .. } => process.log(),
            Server::Pod { kubeconfig, .. } => pods_log(kubeconfig),
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
        // Read-your-writes across the Raft cluster's standbys, as the agent
        // does: the index of the last write, and forward when behind it.
        let index = self.index.lock().unwrap().clone().unwrap_or_default();
        let with = |r| vault_headers(r, token, ns, &index);
        let resp = match (method, body) {
            ("GET", _) => with(agent.get(&url)).call(),
            ("DELETE", _) => with(agent.delete(&url)).call(),
            ("LIST", _) => with(agent.get(format!("{url}?list=true"))).call(),
            (_, body) => {
                vault_headers(agent.post(&url), token, ns, &index).send_json(body.unwrap_or_else(|| json!({})))
            }
        };
        let mut resp = resp.map_err(|e| format!("{method} {path}: {e}"))?;
        if let Some(i) = resp.headers().get("x-vault-index").and_then(|v| v.to_str().ok()) {
            *self.index.lock().unwrap() = Some(i.to_owned());
        }
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
            Server::Pod { kubeconfig, .. } => pods_log(kubeconfig),
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

    /// How many requests whose path satisfies `pred` were answered without
    /// an error: for `database/creds/<role>`, the credentials issued (a
    /// request refused during a leader election is audited too).
    pub fn count_answered(&self, pred: impl Fn(&str) -> bool) -> usize {
        self.audit_entries()
            .iter()
            .filter(|e| e["type"] == "response" && e["request"]["path"].as_str().is_some_and(&pred))
            .filter(|e| e["error"].as_str().is_none_or(str::is_empty))
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

/// The token, namespace and (after a write) read-your-writes headers.
fn vault_headers<B>(r: ureq::RequestBuilder<B>, token: &str, ns: &str, index: &str) -> ureq::RequestBuilder<B> {
    let r = r.header("X-Vault-Token", token).header("X-Vault-Namespace", ns);
    if index.is_empty() {
        r
    } else {
        r.header("X-Vault-Index", index).header("X-Vault-Inconsistent", "forward-active-node")
    }
}

/// Every in-cluster server's stdout (its log and the audit entries of the
/// requests it served as the active server), a restarted server's previous
/// run first.
fn pods_log(kubeconfig: &std::path::Path) -> String {
    let mut all = String::new();
    for i in 0..HA_REPLICAS {
        for previous in [true, false] {
            let out = Command::new("kubectl")
                .arg(format!("--kubeconfig={}", kubeconfig.display()))
                .args(["-n", POD_NS, "logs", &pod_name(i)])
                .args(previous.then_some("--previous"))
                .output()
                .unwrap();
            all.push_str(&String::from_utf8_lossy(&out.stdout));
        }
    }
    all
}

/// The servers' certificate (for Service `openbao` and each server's name
/// under the headless Service) and the PEM of the CA that signed it.
struct Tls {
    cert: String,
    key: String,
    ca: String,
}

fn tls_for_cluster() -> Tls {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "openbao-test-ca");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.clone().self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate().unwrap();
    let names = [
        "openbao.vault.svc",
        "openbao.vault.svc.cluster.local",
        "openbao.vault",
        "openbao",
        "*.openbao-internal.vault.svc",
        "*.openbao-internal.vault.svc.cluster.local",
    ];
    let mut p = CertificateParams::new(names.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, names[0]);
    let cert = p.signed_by(&key, &issuer).unwrap();
    Tls { cert: cert.pem(), key: key.serialize_pem(), ca: ca_pem }
}

/// The namespace, TLS Secret, configuration, Services and StatefulSet of
/// the in-cluster Raft cluster; and the CA's PEM.
fn ha_objects(tls: &Tls) -> (Value, String) {
    let joins: String = (0..HA_REPLICAS)
        .map(|i| {
            format!(
                "  retry_join {{\n    leader_api_addr = \"https://{}.openbao-internal.vault.svc:8200\"\n    leader_ca_cert_file = \"/tls/ca.crt\"\n  }}\n",
                pod_name(i)
            )
        })
        .collect();
    // performance_multiplier 1: the Raft timing OpenBao recommends for
    // production (a lost leader is replaced in about a second).
    let config = format!(
        "disable_mlock = true\nui = false\n\
         storage \"raft\" {{\n  path = \"/data\"\n  performance_multiplier = 1\n{joins}}}\n\
         listener \"tcp\" {{\n  address = \"0.0.0.0:8200\"\n  cluster_address = \"0.0.0.0:8201\"\n  tls_cert_file = \"/tls/tls.crt\"\n  tls_key_file = \"/tls/tls.key\"\n}}\n\
         listener \"tcp\" {{\n  address = \"0.0.0.0:{PLAIN_PORT}\"\n  tls_disable = true\n}}\n\
         audit \"file\" \"stdout\" {{\n  options {{\n    file_path = \"stdout\"\n  }}\n}}\n"
    );
    let restricted = json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": true, "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}});
    let own = |name: &str, value: &str| {
        let v = value.replace("NAME", "$(POD_NAME)");
        [json!({"name": format!("BAO_{name}"), "value": v}), json!({"name": format!("VAULT_{name}"), "value": v})]
    };
    let mut env = vec![
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        json!({"name": "HOME", "value": "/tmp"}),
        json!({"name": "SKIP_SETCAP", "value": "1"}),
    ];
    env.extend(own("API_ADDR", "https://NAME.openbao-internal.vault.svc:8200"));
    env.extend(own("CLUSTER_ADDR", "https://NAME.openbao-internal.vault.svc:8201"));
    env.extend(own("RAFT_NODE_ID", "NAME"));
    let port = |name: &str, port: u16| json!({"name": name, "port": port, "targetPort": port});
    let container = json!({"name": "openbao", "image": "sidekey.test/openbao:1", "imagePullPolicy": "Never",
                            "args": ["server", "-log-level=warn", "-config=/config/openbao.hcl"],
                            "env": env,
                            "securityContext": restricted,
                            // Ready: unsealed, active or standby.
                            "readinessProbe": {"httpGet": {"path": "/v1/sys/health?standbyok=true", "port": PLAIN_PORT},
                                "periodSeconds": 1, "failureThreshold": 1},
                            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                            "volumeMounts": [{"name": "tls", "mountPath": "/tls", "readOnly": true},
                                             {"name": "config", "mountPath": "/config", "readOnly": true},
                                             {"name": "data", "mountPath": "/data"},
                                             {"name": "tmp", "mountPath": "/tmp"}]});
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": POD_NS,
            "labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "openbao-tls", "namespace": POD_NS},
            "type": "kubernetes.io/tls", "stringData": {"tls.crt": tls.cert, "tls.key": tls.key, "ca.crt": tls.ca}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "openbao-config", "namespace": POD_NS},
            "data": {"openbao.hcl": config}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "openbao", "namespace": POD_NS},
            "spec": {"selector": {"app": "openbao"}, "ports": [port("https", 8200)]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "openbao-test", "namespace": POD_NS},
            "spec": {"selector": {"app": "openbao"}, "ports": [port("plain", PLAIN_PORT)]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "openbao-internal", "namespace": POD_NS},
            "spec": {"clusterIP": "None", "publishNotReadyAddresses": true, "selector": {"app": "openbao"},
                "ports": [port("https", 8200), port("cluster", 8201)]}},
        {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "openbao", "namespace": POD_NS},
            "spec": {"serviceName": "openbao-internal", "replicas": HA_REPLICAS, "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": {"app": "openbao"}},
                "template": {"metadata": {"labels": {"app": "openbao"}},
                    "spec": {"automountServiceAccountToken": false, "terminationGracePeriodSeconds": 5,
                        "securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532},
                        "containers": [container],
                        "volumes": [{"name": "tls", "secret": {"secretName": "openbao-tls"}},
                                    {"name": "config", "configMap": {"name": "openbao-config"}},
                                    {"name": "data", "emptyDir": {"sizeLimit": "64Mi"}},
                                    {"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}}]}}}}
    ]});
    (objects, tls.ca.clone())
}
