//! etcd and a real kube-apiserver (built from the Go module proxy by
//! `make testenv`) on loopback: serving certs from a throwaway CA, a
//! service-account issuer and signing key (TokenRequest and TokenReview
//! work), the PodSecurity and admission-webhook plugins, and a kubeconfig for
//! kubectl and kube-rs. Alone it has no kubelet or controllers: pods are
//! stored, not run; [`crate::Cluster`] starts it inside a node's network
//! namespace with everything else a node needs.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use tempfile::TempDir;

use crate::node::Node;
use crate::{Process, TcpProxy, free_port, tool, wait_until};

/// A running etcd + kube-apiserver pair.
pub struct KubeApi {
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The PEM of the CA that signed the serving certificate.
    pub ca_pem: String,
    /// A bearer token in group `system:masters`.
    pub admin_token: String,
    /// A kubeconfig with that token, usable by kubectl and kube-rs.
    pub kubeconfig: PathBuf,
    /// The CA (PEM, key) for signing more certificates (webhook serving certs).
    ca_key_pem: String,
    apiserver: Process,
    /// How the apiserver was started (program and arguments), to start it
    /// again after [`KubeApi::stop_apiserver`].
    apiserver_cmd: Vec<std::ffi::OsString>,
    etcd: Process,
    /// Inside a node: the forwarder from the host's loopback to the apiserver.
    forward: Option<TcpProxy>,
    dir: TempDir,
}

/// A certificate and key signed by the test CA.
pub struct SignedCert {
    /// PEM certificate.
    pub cert_pem: String,
    /// PEM private key.
    pub key_pem: String,
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "sidekey-test-ca");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p
}

impl KubeApi {
    /// Starts etcd and kube-apiserver and waits until the API is ready.
    pub fn start() -> KubeApi {
        Self::start_on(None)
    }

    /// Starts etcd and kube-apiserver, on the host's loopback or inside
    /// `node`'s namespaces: there the apiserver listens on the node's address
    /// (pods reach it through the `kubernetes` Service, it reaches webhooks
    /// and kubelets directly) and the host reaches it through a forwarder on
    /// 127.0.0.1.
    pub(crate) fn start_on(node: Option<&Node>) -> KubeApi {
        let launch = |bin: PathBuf| node.map_or_else(|| Command::new(&bin), |n| n.command(&bin));
        let etcd_bin = tool("SIDEKEY_ETCD");
        let apiserver_bin = tool("SIDEKEY_KUBE_APISERVER");
        let dir = tempfile::Builder::new().prefix("sidekey-kube").tempdir().unwrap();
        let d = dir.path();

        // In a node's own network namespace nothing else can take a port.
        let (client_port, peer_port) = if node.is_some() { (2379, 2380) } else { (free_port(), free_port()) };
        let mut etcd_cmd = launch(etcd_bin);
        etcd_cmd
            .arg(format!("--data-dir={}", d.join("etcd").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{client_port}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{client_port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}"))
            .arg(format!("--initial-cluster=default=http://127.0.0.1:{peer_port}"))
            .args(["--name=default", "--unsafe-no-fsync", "--log-level=warn"]);
        let etcd = Process::spawn("etcd", etcd_cmd, d);

        // CA, serving certificate, service-account signing key.
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params().self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params(), &ca_key);
        let mut names = vec!["localhost", "kubernetes.default.svc", "kubernetes.default", "kubernetes"];
        if node.is_some() {
            names.extend([crate::node::NODE_IP, crate::node::API_SERVICE_IP]);
        }
        let serving = Self::sign_with(&issuer, &names);
        let sa_key = KeyPair::generate().unwrap();
        let admin_token = "sidekey-admin-test-token".to_owned();
        std::fs::write(d.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(d.join("serving.pem"), &serving.cert_pem).unwrap();
        std::fs::write(d.join("serving-key.pem"), &serving.key_pem).unwrap();
        std::fs::write(d.join("sa.pem"), sa_key.serialize_pem()).unwrap();
        std::fs::write(d.join("sa.pub"), sa_key.public_key_pem()).unwrap();
        std::fs::write(d.join("tokens.csv"), format!("{admin_token},admin,admin,system:masters\n")).unwrap();

        // Inside a node the host cannot reach etcd; the apiserver's
        // readiness below covers it (the apiserver waits for etcd).
        if node.is_none() {
            wait_until(
                "etcd to be ready",
                Duration::from_secs(30),
                || {
                    etcd.assert_running();
                    crate::http()
                        .get(format!("http://127.0.0.1:{client_port}/health"))
                        .call()
                        .is_ok_and(|r| r.status() == 200)
                },
                || etcd.log(),
            );
        }

        let port = if node.is_some() { 6443 } else { free_port() };
        let mut cmd = launch(apiserver_bin);
        cmd.arg(format!("--etcd-servers=http://127.0.0.1:{client_port}")).arg(format!("--secure-port={port}"));
        if node.is_some() {
            // The apiserver calls kubelets (exec, logs) with a client
            // certificate in system:masters and checks their serving
            // certificates against the cluster CA.
            let client = Self::sign_client(&issuer, "kube-apiserver-kubelet-client", "system:masters");
            std::fs::write(d.join("kubelet-client.pem"), &client.cert_pem).unwrap();
            std::fs::write(d.join("kubelet-client-key.pem"), &client.key_pem).unwrap();
            cmd.args(["--bind-address=0.0.0.0", &format!("--advertise-address={}", crate::node::NODE_IP)])
                .arg(format!("--kubelet-client-certificate={}", d.join("kubelet-client.pem").display()))
                .arg(format!("--kubelet-client-key={}", d.join("kubelet-client-key.pem").display()))
                .arg(format!("--kubelet-certificate-authority={}", d.join("ca.pem").display()))
                .arg("--kubelet-preferred-address-types=InternalIP")
                .arg(format!("--service-cluster-ip-range={}", crate::node::SERVICE_CIDR));
        } else {
            cmd.args([
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                "--service-cluster-ip-range=10.96.0.0/16",
            ]);
        }
        cmd
            .arg(format!("--cert-dir={}", d.join("certs").display()))
            .arg(format!("--tls-cert-file={}", d.join("serving.pem").display()))
            .arg(format!("--tls-private-key-file={}", d.join("serving-key.pem").display()))
            .arg(format!("--token-auth-file={}", d.join("tokens.csv").display()))
            .arg(format!("--service-account-issuer={}", Self::ISSUER))
            .arg(format!("--service-account-key-file={}", d.join("sa.pub").display()))
            .arg(format!("--service-account-signing-key-file={}", d.join("sa.pem").display()))
            .args([
                "--authorization-mode=RBAC",
                "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,PodSecurity,MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
                "--disable-admission-plugins=DefaultStorageClass,DefaultTolerationSeconds,StorageObjectInUseProtection,PersistentVolumeClaimResize,RuntimeClass,CertificateApproval,CertificateSigning,ClusterTrustBundleAttest,CertificateSubjectRestriction,TaintNodesByCondition,Priority,ResourceQuota,LimitRanger",
                "--allow-privileged=true",
                "--v=1",
            ]);
        let apiserver_cmd =
            std::iter::once(cmd.get_program().to_owned()).chain(cmd.get_args().map(ToOwned::to_owned)).collect();
        let apiserver = Process::spawn("kube-apiserver", cmd, d);
        let forward = node.map(|n| TcpProxy::start_in(&format!("{}:{port}", crate::node::NODE_IP), Some(&n.netns())));
        let url = match &forward {
            Some(f) => format!("https://{}", f.addr),
            None => format!("https://127.0.0.1:{port}"),
        };
        let ca_pem = ca_cert.pem();

        let kubeconfig = d.join("kubeconfig");
        let b64 = base64::engine::general_purpose::STANDARD.encode(&ca_pem);
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    certificate-authority-data: {b64}\nusers:\n- name: admin\n  user:\n    token: {admin_token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\n    namespace: default\ncurrent-context: test\n"
            ),
        )
        .unwrap();

        let api = KubeApi {
            url,
            ca_pem,
            admin_token,
            kubeconfig,
            ca_key_pem: ca_key.serialize_pem(),
            apiserver,
            apiserver_cmd,
            etcd,
            forward,
            dir,
        };
        api.wait_ready();
        // The default namespace exists once the bootstrap controller ran.
        wait_until(
            "the default namespace",
            Duration::from_secs(30),
            || api.kubectl(&["get", "namespace", "default"]).status.success(),
            || api.apiserver.log(),
        );
        api
    }

    fn wait_ready(&self) {
        wait_until(
            "kube-apiserver to be ready",
            Duration::from_secs(90),
            || {
                let ok = self.kubectl(&["get", "--raw", "/readyz"]);
                ok.status.success() && String::from_utf8_lossy(&ok.stdout).trim() == "ok"
            },
            || format!("{}\n--- etcd ---\n{}", self.apiserver.log(), self.etcd.log()),
        );
    }

    /// Stops kube-apiserver (SIGTERM, as a control-plane restart would);
    /// etcd keeps running.
    pub fn stop_apiserver(&self) {
        self.apiserver.stop(Duration::from_secs(15));
    }

    /// Starts kube-apiserver again as it was first started and waits until
    /// it is ready; returns how long that took.
    pub fn start_apiserver(&self) -> Duration {
        let started = std::time::Instant::now();
        let mut cmd = Command::new(&self.apiserver_cmd[0]);
        cmd.args(&self.apiserver_cmd[1..]);
        self.apiserver.start_again(cmd);
        self.wait_ready();
        started.elapsed()
    }

    /// A serving certificate for `names` (IP addresses among them become IP
    /// SANs) and 127.0.0.1.
    fn sign_with(issuer: &Issuer<'_, &KeyPair>, names: &[&str]) -> SignedCert {
        let key = KeyPair::generate().unwrap();
        let (ips, dns): (Vec<&str>, Vec<&str>) = names.iter().partition(|n| n.parse::<IpAddr>().is_ok());
        let mut p = CertificateParams::new(dns.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
        p.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        p.subject_alt_names.extend(ips.iter().map(|ip| SanType::IpAddress(ip.parse().unwrap())));
        p.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("localhost"));
        let cert = p.signed_by(&key, issuer).unwrap();
        SignedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// A client certificate for user `cn` in group `org`.
    fn sign_client(issuer: &Issuer<'_, &KeyPair>, cn: &str, org: &str) -> SignedCert {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.distinguished_name.push(DnType::OrganizationName, org);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, issuer).unwrap();
        SignedCert { cert_pem: cert.pem(), key_pem: key.serialize_pem() }
    }

    /// A serving certificate for `names` (and 127.0.0.1) signed by this
    /// cluster's CA, e.g. for a webhook the apiserver calls.
    pub fn sign_serving_cert(&self, names: &[&str]) -> SignedCert {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem).unwrap();
        let issuer = Issuer::new(ca_params(), &ca_key);
        Self::sign_with(&issuer, names)
    }

    /// Where a server that calls the apiserver (OpenBao's TokenReview)
    /// reaches it: the host URL, or inside a cluster the `kubernetes`
    /// Service's name.
    pub fn url_for_servers(&self) -> String {
        if self.forward.is_some() { "https://kubernetes.default.svc".into() } else { self.url.clone() }
    }

    /// The apiserver log so far.
    pub fn log(&self) -> String {
        self.apiserver.log()
    }

    /// The scratch directory of this cluster.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Runs kubectl against this cluster.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run kubectl: {e} (install kubectl)"))
    }

    /// Runs kubectl with `stdin` as input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        let mut cmd = Command::new("kubectl");
        cmd.arg(format!("--kubeconfig={}", self.kubeconfig.display())).args(args);
        crate::output_with_stdin(&mut cmd, stdin)
    }

    /// Runs kubectl and returns stdout.
    ///
    /// # Panics
    /// When kubectl fails, with its stderr.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Creates a namespace with `labels` (`key=value`).
    pub fn create_namespace(&self, name: &str, labels: &[&str]) {
        self.kubectl_ok(&["create", "namespace", name]);
        if !labels.is_empty() {
            let mut args = vec!["label", "namespace", name];
            args.extend_from_slice(labels);
            self.kubectl_ok(&args);
        }
    }

    /// Creates a service account (there is no controller to create `default`).
    pub fn create_service_account(&self, namespace: &str, name: &str) {
        self.kubectl_ok(&["-n", namespace, "create", "serviceaccount", name]);
    }

    /// The issuer of the service-account tokens it signs.
    pub const ISSUER: &'static str = "https://kubernetes.default.svc.cluster.local";

    /// The public key (PEM) that verifies its service-account tokens, as a
    /// JWT auth method is configured with (`jwt_validation_pubkeys`).
    pub fn service_account_public_key(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sa.pub")).unwrap()
    }

    /// A service-account token from the TokenRequest API.
    pub fn token_request(&self, namespace: &str, sa: &str, audience: &str) -> String {
        self.kubectl_ok(&["-n", namespace, "create", "token", sa, "--audience", audience, "--duration", "1h"])
            .trim()
            .to_owned()
    }

    /// A kube-rs client for this cluster.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
        kube::Client::try_from(config).unwrap()
    }
}
