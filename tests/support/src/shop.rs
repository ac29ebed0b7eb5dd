//! The example shop on a real node: the story the real-pod tests check
//! and `make demo-cluster` shows, told once. OpenBao runs in the cluster
//! behind TLS with a KV secret, the database engine against PostgreSQL on
//! the node (dynamic credentials with a 10 s TTL and a 30 s max TTL) and
//! Kubernetes auth; the Helm chart installs the injector; the example
//! workload `examples/workloads/orders-app.yaml` runs in namespace `shop`,
//! which enforces Pod Security `restricted`.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::node::NODE_IP;
use crate::{Cluster, OpenBao, Postgres, tool};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The image tarballs `scripts/build-images.sh --test` writes to
/// `target/images` (or `$SIDEKEY_IMAGES`).
///
/// # Panics
/// When one is missing, with the command that builds them.
pub fn images() -> Vec<PathBuf> {
    let mut all = test_images();
    all.extend(PRODUCT_IMAGES.iter().map(|n| image(n)));
    all
}

/// The images the product ships, which the supply-chain path pushes to a
/// registry, signs and pulls by digest instead of importing.
pub const PRODUCT_IMAGES: [&str; 3] = ["sidekey-agent", "sidekey-injector", "sidekey-example-app"];

/// The images only the tests use (the pause image, OpenBao, a busybox
/// toolbox, the example app with a shell), imported into containerd.
pub fn test_images() -> Vec<PathBuf> {
    ["pause", "openbao", "testbox", "example-app-debug"].iter().map(|n| image(n)).collect()
}

/// The tarball of image `name` in `target/images` (or `$SIDEKEY_IMAGES`).
///
/// # Panics
/// When it is missing, with the command that builds it.
pub fn image(name: &str) -> PathBuf {
    let dir = std::env::var_os("SIDEKEY_IMAGES").map_or_else(|| repo_root().join("target/images"), PathBuf::from);
    let p = dir.join(format!("{name}.tar"));
    assert!(p.exists(), "image {} is missing: run `scripts/build-images.sh --test` (make test does)", p.display());
    p
}

/// The cluster with OpenBao and PostgreSQL set up for the shop.
pub struct Shop {
    /// The node and its control plane.
    pub cluster: Cluster,
    /// OpenBao in the cluster.
    pub bao: OpenBao,
    /// PostgreSQL on the node.
    pub pg: Postgres,
    /// The first KV value behind `secret/data/shop/orders#api_key`.
    pub api_key: String,
}

/// The policy of role `orders`: the database credentials, their renewal,
/// and the shop's KV secrets.
const ORDERS_POLICY: &str = "path \"database/creds/orders\" { capabilities = [\"read\"] }\n\
    path \"sys/leases/renew\" { capabilities = [\"update\"] }\n\
    path \"secret/data/shop/*\" { capabilities = [\"read\"] }\n\
    path \"secret/metadata/shop/*\" { capabilities = [\"read\"] }\n";

impl Shop {
    /// Starts the cluster with `images` loaded, OpenBao in it and
    /// PostgreSQL on the node, and sets OpenBao up for the shop.
    pub fn start(images: &[PathBuf]) -> Shop {
        Self::on(Cluster::start(images))
    }

    /// Sets up OpenBao and PostgreSQL on a running cluster.
    pub fn on(cluster: Cluster) -> Shop {
        let bao = OpenBao::in_cluster(&cluster);
        let pg = Postgres::start_in(cluster.node());
        bao.enable_postgres(&pg, "orders", 10, 30);
        bao.put_policy("orders", ORDERS_POLICY);
        let api_key = format!("shop-api-key-{:x}", std::process::id() as u64 * 104_729);
        bao.kv_put("shop/orders", json!({"api_key": api_key}));
        bao.enable_kubernetes_auth(&cluster.api, "orders", "shop", "orders", "sidekey", &["orders"]);
        Shop { cluster, bao, pg, api_key }
    }

    /// `helm` with this cluster's kubeconfig; its output, or a failure
    /// with the pods and events of namespace `sidekey`.
    pub fn helm(&self, args: &[&str]) -> String {
        let out = Command::new(tool("SIDEKEY_HELM"))
            .arg(format!("--kubeconfig={}", self.cluster.api.kubeconfig.display()))
            .args(args)
            .output()
            .unwrap();
        if !out.status.success() {
            // What the injector's containers said, the last run of a crashing one too.
            let kubectl = |a: &[&str]| String::from_utf8_lossy(&self.cluster.api.kubectl(a).stdout).into_owned();
            let logs = kubectl(&[
                "-n",
                "sidekey",
                "logs",
                "-l",
                "app.kubernetes.io/name=sidekey-injector",
                "--tail=20",
                "--prefix",
            ]);
            let previous = kubectl(&[
                "-n",
                "sidekey",
                "logs",
                "-l",
                "app.kubernetes.io/name=sidekey-injector",
                "--previous",
                "--tail=20",
                "--prefix",
            ]);
            panic!(
                "helm {args:?}: {}{}\n{}\nlogs:\n{logs}\nprevious runs:\n{previous}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                kubectl(&["-n", "sidekey", "get", "pods,events"])
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `helm install sidekey deploy/helm/sidekey` into namespace `sidekey`
    /// (enforcing `restricted`) with self-managed TLS, pointed at the
    /// in-cluster OpenBao and its CA; waits until the injector is ready.
    pub fn helm_install(&self) {
        self.helm_install_with(&[]);
    }

    /// [`Shop::helm_install`] with more `--set` values (`key=value`).
    pub fn helm_install_with(&self, values: &[String]) {
        let (vault_addr, ca_pem) = self.bao.in_cluster.clone().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("vault-ca.pem");
        std::fs::write(&ca, ca_pem).unwrap();
        self.cluster.api.create_namespace("sidekey", &["pod-security.kubernetes.io/enforce=restricted"]);
        let chart = repo_root().join("deploy/helm/sidekey");
        let chart = chart.display().to_string();
        let addr = format!("config.vault.addr={vault_addr}");
        let ca = format!("config.vault.caCert={}", ca.display());
        let mut args =
            vec!["install", "sidekey", &chart, "--namespace", "sidekey", "--wait", "--timeout", "120s", "--set", &addr];
        args.extend(["--set-file", &ca]);
        for v in values {
            args.extend(["--set", v.as_str()]);
        }
        self.helm(&args);
    }

    /// Applies `examples/workloads/orders-app.yaml` into namespace `shop`
    /// with `image` for the app and `extra` annotations on its pod template,
    /// plus Service `orders-db` for PostgreSQL on the node; waits until its
    /// pod is Ready and returns the pod's name.
    pub fn apply_orders_app(&self, image: &str, extra_annotations: &[(&str, &str)]) -> String {
        let c = &self.cluster;
        c.api.create_namespace("shop", &["pod-security.kubernetes.io/enforce=restricted"]);
        c.api.create_service_account("shop", "orders");
        // orders-db.shop.svc: PostgreSQL beside the cluster, as most databases are.
        c.apply_ok(
            &json!({"apiVersion": "v1", "kind": "List", "items": [
                {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "orders-db", "namespace": "shop"},
                    "spec": {"ports": [{"name": "pg", "port": 5432, "targetPort": 5432}]}},
                {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": "orders-db-1", "namespace": "shop",
                                 "labels": {"kubernetes.io/service-name": "orders-db"}},
                    "addressType": "IPv4", "ports": [{"name": "pg", "port": 5432}],
                    "endpoints": [{"addresses": [NODE_IP]}]}]})
            .to_string(),
        );
        let mut manifest = std::fs::read_to_string(repo_root().join("examples/workloads/orders-app.yaml"))
            .unwrap()
            .replace("ghcr.io/sidekey/sidekey-example-app:0.1.0", image);
        let anchor = "        sidekey.dev/vault-role: orders\n";
        assert!(manifest.contains(anchor), "the example's annotations moved");
        let extra: String = extra_annotations.iter().map(|(k, v)| format!("        {k}: \"{v}\"\n")).collect();
        manifest = manifest.replace(anchor, &format!("{anchor}{extra}"));
        c.apply_ok(&manifest);
        let deadline = Instant::now() + Duration::from_secs(90);
        let pod = loop {
            let pods = c.get_json(&["-n", "shop", "get", "pods", "-l", "app=orders"]);
            if let Some(name) = pods["items"][0]["metadata"]["name"].as_str() {
                break name.to_owned();
            }
            assert!(Instant::now() < deadline, "no orders pod: {}", c.api.kubectl_ok(&["-n", "shop", "get", "events"]));
            std::thread::sleep(Duration::from_millis(200));
        };
        c.wait_ready("shop", &pod, Duration::from_secs(90));
        pod
    }
}
