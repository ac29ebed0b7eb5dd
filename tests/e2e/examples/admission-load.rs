//! What the webhook adds to a pod creation, measured at a real
//! kube-apiserver: pods created with server-side dry run (admission runs in
//! full, nothing is stored, no node needed) at an offered rate, with the
//! webhook (the pod carries the opt-in label the chart's objectSelector
//! matches) and without it (no label: the apiserver does not call the
//! webhook), through 1 injector replica and through 2 behind a round-robin
//! TCP proxy standing in for the Service.
//!
//! A third case calls the webhook with a pod that does not opt in (it
//! answers at once, without a patch): the cost of the call itself.
//!
//! Reported per case: the rate achieved, the creation's p50 / p99 / max as
//! the client sees it (measured from the moment each request was due, so
//! queueing at overload counts), and the apiserver's own histogram of the
//! webhook call (`apiserver_admission_webhook_admission_duration_seconds`,
//! whose finest buckets are 5 ms and 25 ms).
//!
//! ```sh
//! cargo build --release -p sidekey-injector
//! source ~/.cache/sidekey/env.sh
//! cargo run --release -p sidekey-e2e --example admission-load -- [RATES] [SECONDS]
//! ```
//! RATES defaults to `100,1000` pods/s, SECONDS to 10. Loopback only.

#![allow(clippy::unwrap_used, clippy::print_stdout, clippy::disallowed_methods, missing_docs)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use sidekey_testenv::{KubeApi, TcpProxy, free_port, wait_until};

const WEBHOOK: &str = "inject.sidekey.dev";

struct Replicas(Vec<Child>);

impl Drop for Replicas {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn injector_binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let bin = root.join("target/release/sidekey-injector");
    assert!(bin.exists(), "{} is missing: cargo build --release -p sidekey-injector", bin.display());
    bin
}

/// `n` injector replicas serving a certificate from the apiserver's CA.
fn replicas(kube: &KubeApi, n: usize, dir: &std::path::Path) -> (Replicas, Vec<String>) {
    let cert = kube.sign_serving_cert(&["localhost"]);
    std::fs::write(dir.join("tls.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &cert.key_pem).unwrap();
    let mut children = Vec::new();
    let mut addrs = Vec::new();
    for _ in 0..n {
        let (port, admin) = (free_port(), free_port());
        let child = Command::new(injector_binary())
            .args(["--listen", &format!("127.0.0.1:{port}"), "--admin-listen", &format!("127.0.0.1:{admin}")])
            .arg("--tls-cert")
            .arg(dir.join("tls.crt"))
            .arg("--tls-key")
            .arg(dir.join("tls.key"))
            .env("SIDEKEY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until(
            "an injector replica",
            Duration::from_secs(30),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            String::new,
        );
        children.push(child);
        addrs.push(format!("127.0.0.1:{port}"));
    }
    (Replicas(children), addrs)
}

fn webhook_config(url: &str, ca_pem: &str) -> String {
    use base64::Engine;
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": "sidekey-injector"},
        "webhooks": [{"name": WEBHOOK,
            "clientConfig": {"url": url, "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem)},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}],
            "objectSelector": {"matchLabels": {"sidekey.dev/inject": "true"}},
            "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail", "timeoutSeconds": 5,
            "reinvocationPolicy": "IfNeeded"}]
    })
    .to_string()
}

/// How a pod meets the webhook.
#[derive(Clone, Copy)]
enum Case {
    /// No opt-in label: the apiserver does not call the webhook.
    NotCalled,
    /// The label without the opt-in annotation: called, answers without a patch.
    Skipped,
    /// Opted in: called, answers with the patch that injects the agent.
    Injected,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::NotCalled => "not called",
            Case::Skipped => "called, no patch",
            Case::Injected => "injects",
        }
    }
}

/// The typical pod of `benches/typical-pod.json`, in namespace `load`.
fn pod(case: Case) -> Vec<u8> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut pod: Value =
        serde_json::from_str(&std::fs::read_to_string(root.join("benches/typical-pod.json")).unwrap()).unwrap();
    pod["metadata"]["namespace"] = json!("load");
    pod["metadata"]["name"] = json!("p");
    match case {
        Case::NotCalled => {
            if let Some(labels) = pod["metadata"]["labels"].as_object_mut() {
                labels.remove("sidekey.dev/inject");
            }
        }
        Case::Skipped => {
            pod["metadata"]["labels"]["sidekey.dev/inject"] = json!("true");
            if let Some(annotations) = pod["metadata"]["annotations"].as_object_mut() {
                annotations.remove("sidekey.dev/inject");
            }
        }
        Case::Injected => pod["metadata"]["labels"]["sidekey.dev/inject"] = json!("true"),
    }
    serde_json::to_vec(&pod).unwrap()
}

/// The webhook-call histogram of the apiserver: (bucket upper bound, count).
async fn webhook_histogram(client: &reqwest::Client, kube: &KubeApi) -> Vec<(f64, f64)> {
    let text = client
        .get(format!("{}/metrics", kube.url))
        .bearer_auth(&kube.admin_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut buckets = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_admission_webhook_admission_duration_seconds_bucket{") else {
            continue;
        };
        if !rest.contains(&format!("name=\"{WEBHOOK}\"")) {
            continue;
        }
        let le = rest.split("le=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("+Inf");
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
        let count: f64 = rest.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
        match buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += count,
            None => buckets.push((le, count)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

struct Outcome {
    rate: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    errors: usize,
}

/// `rate` dry-run creations a second for `secs` seconds, open loop.
async fn run(client: &reqwest::Client, kube: &KubeApi, body: Arc<Vec<u8>>, rate: u32, secs: u32) -> Outcome {
    let url = format!("{}/api/v1/namespaces/load/pods?dryRun=All", kube.url);
    let total = rate * secs;
    let start = tokio::time::Instant::now();
    let in_flight = Arc::new(tokio::sync::Semaphore::new(512));
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(f64::from(i) / f64::from(rate));
        tokio::time::sleep_until(due).await;
        let (client, url, body, token, in_flight) =
            (client.clone(), url.clone(), body.clone(), kube.admin_token.clone(), in_flight.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = in_flight.acquire_owned().await;
            let answer = client
                .post(&url)
                .bearer_auth(token)
                .header("Content-Type", "application/json")
                .body(body.as_ref().clone())
                .send()
                .await;
            let latency = due.elapsed();
            let error = match answer {
                Ok(r) if r.status().is_success() => None,
                Ok(r) => Some(format!("HTTP {}: {}", r.status(), r.text().await.unwrap_or_default())),
                Err(e) => Some(e.to_string()),
            };
            (latency, error)
        }));
    }
    let mut latencies = Vec::with_capacity(tasks.len());
    let mut errors = 0;
    for t in tasks {
        let (latency, error) = t.await.unwrap();
        latencies.push(latency);
        if let Some(e) = error {
            if errors == 0 {
                eprintln!("first error: {}", e.chars().take(400).collect::<String>());
            }
            errors += 1;
        }
    }
    let took = start.elapsed().as_secs_f64();
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    Outcome { rate: f64::from(total) / took, p50: at(0.5), p99: at(0.99), max: *latencies.last().unwrap(), errors }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rates: Vec<u32> =
        args.next().unwrap_or_else(|| "100,1000".into()).split(',').map(|r| r.parse().unwrap()).collect();
    let secs: u32 = args.next().map_or(10, |s| s.parse().unwrap());
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kube = KubeApi::start();
    kube.create_namespace("load", &[]);
    let typical: Value = serde_json::from_slice(&pod(Case::NotCalled)).unwrap();
    kube.create_service_account("load", typical["spec"]["serviceAccountName"].as_str().unwrap_or("default"));
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ca = reqwest::Certificate::from_pem(kube.ca_pem.as_bytes()).unwrap();
    let client = reqwest::Client::builder().tls_certs_only([ca]).build().unwrap();
    println!(
        "| injector replicas | offered pods/s | webhook | achieved/s | p50 | p99 | max | errors | webhook calls ≤ 5 ms / ≤ 25 ms (apiserver) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for n in [1, 2] {
        let (_replicas, addrs) = replicas(&kube, n, dir.path());
        // One replica is called directly; two through a round-robin proxy
        // (a thread per connection direction), as a Service would spread them.
        let proxy = (n > 1).then(|| TcpProxy::round_robin(&addrs));
        let url = format!("https://{}/mutate", proxy.as_ref().map_or(&addrs[0], |p| &p.addr));
        let out = kube.kubectl_stdin(&["apply", "-f", "-"], &webhook_config(&url, &kube.ca_pem));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        rt.block_on(async {
            // Warm up: connections, the apiserver's webhook client.
            run(&client, &kube, Arc::new(pod(Case::Injected)), 50, 2).await;
            for &rate in &rates {
                for case in [Case::NotCalled, Case::Skipped, Case::Injected] {
                    let before = webhook_histogram(&client, &kube).await;
                    let o = run(&client, &kube, Arc::new(pod(case)), rate, secs).await;
                    let after = webhook_histogram(&client, &kube).await;
                    let delta = |le: f64| {
                        let count = |h: &[(f64, f64)]| h.iter().find(|(b, _)| *b == le).map_or(0.0, |(_, c)| *c);
                        count(&after) - count(&before)
                    };
                    let calls = delta(f64::INFINITY);
                    let share =
                        |le: f64| if calls > 0.0 { format!("{:.1}%", 100.0 * delta(le) / calls) } else { "—".into() };
                    println!(
                        "| {n} | {rate} | {} | {:.0} | {} | {} | {} | {} | {} / {} |",
                        case.label(),
                        o.rate,
                        ms(o.p50),
                        ms(o.p99),
                        ms(o.max),
                        o.errors,
                        share(0.005),
                        share(0.025)
                    );
                }
            }
        });
        drop(proxy);
    }
}
