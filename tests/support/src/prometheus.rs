//! A real Prometheus server on the node: built by `make testenv` from the
//! Go module proxy (the promtool version), run in the node's network
//! namespace, finding its targets with Kubernetes service discovery the way
//! the chart's PodMonitor and ServiceMonitor select them, and evaluating
//! `deploy/helm/sidekey/files/alerts.yaml`. Tests read its HTTP API.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::node::NODE_IP;
use crate::{Cluster, Process, TcpProxy, http, tool, wait_until};

/// How often targets are scraped and rules evaluated.
pub const INTERVAL_S: u64 = 2;

/// A running Prometheus.
pub struct Prometheus {
    process: Process,
    _dir: TempDir,
    forward: TcpProxy,
}

impl Prometheus {
    /// Starts Prometheus in `cluster`'s node network namespace with the
    /// chart's alert rules, scraping the agents of injected pods (label
    /// `sidekey.dev/inject: "true"`, container port `sidekey-metrics`:
    /// the chart's PodMonitor) and the injector's Service port `metrics`
    /// (the ServiceMonitor), every [`INTERVAL_S`] seconds.
    pub fn start_in(cluster: &Cluster) -> Prometheus {
        let dir = tempfile::Builder::new().prefix("sidekey-prometheus").tempdir().unwrap();
        let ca = dir.path().join("apiserver-ca.pem");
        std::fs::write(&ca, &cluster.api.ca_pem).unwrap();
        let rules = crate::shop::repo_root().join("deploy/helm/sidekey/files/alerts.yaml");
        let sd = |role: &str| {
            json!([{"role": role, "api_server": format!("https://{NODE_IP}:6443"),
                "authorization": {"credentials": cluster.api.admin_token}, "tls_config": {"ca_file": ca}}])
        };
        let label = |from: &str, to: &str| json!({"source_labels": [from], "target_label": to});
        // JSON is YAML: the configuration as Prometheus reads it.
        let config = json!({
            "global": {"scrape_interval": format!("{INTERVAL_S}s"), "evaluation_interval": format!("{INTERVAL_S}s")},
            "rule_files": [rules],
            "scrape_configs": [
                {"job_name": "sidekey-agents", "kubernetes_sd_configs": sd("pod"), "relabel_configs": [
                    {"source_labels": ["__meta_kubernetes_pod_label_sidekey_dev_inject"], "regex": "true", "action": "keep"},
                    {"source_labels": ["__meta_kubernetes_pod_container_port_name"], "regex": "sidekey-metrics", "action": "keep"},
                    label("__meta_kubernetes_namespace", "namespace"),
                    label("__meta_kubernetes_pod_name", "pod")]},
                {"job_name": "sidekey-injector", "kubernetes_sd_configs": sd("endpoints"), "relabel_configs": [
                    {"source_labels": ["__meta_kubernetes_service_name", "__meta_kubernetes_endpoint_port_name"],
                     "regex": "sidekey-injector;metrics", "action": "keep"},
                    label("__meta_kubernetes_namespace", "namespace"),
                    label("__meta_kubernetes_pod_name", "pod")]}
            ]
        });
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, serde_json::to_string_pretty(&config).unwrap()).unwrap();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--target={}", cluster.node().pid()))
            .arg("--net")
            .arg("--")
            .arg(tool("SIDEKEY_PROMETHEUS"))
            .arg(format!("--config.file={}", file.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg("--web.listen-address=127.0.0.1:9090")
            .arg("--log.level=warn");
        let process = Process::spawn("prometheus", cmd, dir.path());
        let forward = TcpProxy::start_in("127.0.0.1:9090", Some(&cluster.node().netns()));
        let p = Prometheus { process, _dir: dir, forward };
        wait_until(
            "Prometheus to be ready",
            Duration::from_secs(60),
            || {
                p.process.assert_running();
                http().get(format!("{}/-/ready", p.forward.url())).call().is_ok_and(|r| r.status() == 200)
            },
            || p.process.log(),
        );
        p
    }

    /// `GET /api/v1/<path>`'s `data`.
    ///
    /// # Panics
    /// When Prometheus does not answer with `status: success`.
    pub fn api(&self, path: &str) -> Value {
        let mut r = http().get(format!("{}/api/v1/{path}", self.forward.url())).call().unwrap();
        let v: Value = r.body_mut().read_json().unwrap();
        assert_eq!(v["status"], "success", "{path}: {v}");
        v["data"].clone()
    }

    /// The alerts now pending or firing (`/api/v1/alerts`).
    pub fn alerts(&self) -> Vec<Value> {
        self.api("alerts")["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// The active scrape targets of `job` that are up.
    pub fn targets_up(&self, job: &str) -> Vec<Value> {
        let targets = self.api("targets?state=active")["activeTargets"].as_array().cloned().unwrap_or_default();
        targets.into_iter().filter(|t| t["labels"]["job"] == job && t["health"] == "up").collect()
    }

    /// An instant query's result vector.
    pub fn query(&self, promql: &str) -> Vec<Value> {
        let q: String = url_encode(promql);
        self.api(&format!("query?query={q}"))["result"].as_array().cloned().unwrap_or_default()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
