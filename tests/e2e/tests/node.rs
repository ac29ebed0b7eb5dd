//! The product in real pods on a real node: the images `make images` builds,
//! pushed to a registry on the node, signed and attested by digest with
//! cosign, and pulled by digest by containerd; the Helm chart installing the
//! injector as pods
//! behind its Service; OpenBao in the cluster as a three-server Raft cluster
//! behind TLS; the example
//! workload applied with kubectl into a namespace that enforces Pod Security
//! `restricted`; and what the pod does, observed from inside it.
//!
//! One cluster serves every step (it starts in 5-10 s); each step is a
//! function named after what it proves, run in order.

#![allow(clippy::unwrap_used, clippy::disallowed_methods, missing_docs)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};
use sidekey_testenv::shop::{PRODUCT_IMAGES, Shop, image, repo_root, test_images};
use sidekey_testenv::{Cluster, Cosign, Prometheus, Published, Registry, prometheus};

/// The product's images in the node's registry, and the key that signed them.
struct Supply {
    registry: Registry,
    cosign: Cosign,
    agent: Published,
    injector: Published,
}

/// The supply-chain path: each product image is pushed to a registry on the
/// node (the CNCF distribution registry), signed by digest with cosign and a
/// key made for this run, and the agent's and injector's CycloneDX SBOMs
/// are attested to them; signatures and attestations verify against the
/// key, and not against another.
fn the_images_are_pushed_signed_and_attested(c: &Cluster) -> Supply {
    let registry = Registry::start_in(c.node());
    let cosign = Cosign::new();
    let mut published = Vec::new();
    for name in PRODUCT_IMAGES {
        let sbom = repo_root().join(format!("target/sbom/{name}.cdx.json"));
        let sbom = (name != "sidekey-example-app").then(|| {
            assert!(sbom.exists(), "{} is missing: run scripts/sbom.sh (make test does)", sbom.display());
            sbom
        });
        let p = registry.publish(&cosign, &image(name), name, env!("CARGO_PKG_VERSION"), sbom.as_deref());
        let verified = cosign.verify(&p.local_pinned()).unwrap();
        assert!(verified.contains(&p.digest), "{name}: the signature covers {}: {verified}", p.digest);
        if let Some(sbom) = &sbom {
            let out = cosign.verify_attestation(&p.local_pinned(), "cyclonedx").unwrap();
            let envelope: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
            let statement = base64::engine::general_purpose::STANDARD
                .decode(envelope["payload"].as_str().unwrap())
                .map(|b| serde_json::from_slice::<Value>(&b).unwrap())
                .unwrap();
            assert_eq!(statement["predicateType"], "https://cyclonedx.org/bom");
            assert_eq!(statement["subject"][0]["digest"]["sha256"], p.digest.trim_start_matches("sha256:"));
            let bom: Value = serde_json::from_slice(&std::fs::read(sbom).unwrap()).unwrap();
            assert_eq!(statement["predicate"], bom, "{name}: the attested SBOM is the one the build wrote");
        }
        published.push(p);
    }
    let stranger = Cosign::new();
    assert!(stranger.verify(&published[0].local_pinned()).is_err(), "another key does not verify the agent");
    let injector = published.remove(1);
    let agent = published.remove(0);
    Supply { registry, cosign, agent, injector }
}

/// An image changed after signing and pushed under the same tag is not
/// signed: cosign refuses the tag and the new digest, the signed digest
/// still verifies, and the node keeps running the signed one because the
/// chart names it by digest (checked on the pods created afterwards).
fn a_tampered_image_under_the_same_tag_does_not_verify(s: &Supply) {
    let a = &s.agent;
    let tampered = s.registry.push_modified(&image("sidekey-agent"), &format!("{}:{}", a.repo, a.tag));
    assert_ne!(tampered, a.digest);
    assert_eq!(s.registry.digest(&a.repo, &a.tag).as_deref(), Some(tampered.as_str()), "the tag moved");
    assert!(s.cosign.verify(&a.local_tagged()).is_err(), "the moved tag is refused");
    assert!(s.cosign.verify(&format!("{}@{tampered}", a.local)).is_err(), "the new digest is refused");
    s.cosign.verify(&a.local_pinned()).unwrap();
}

/// The injector replicas and the agent of an injected pod run exactly the
/// signed images, pulled from the registry by digest.
fn the_pods_run_the_signed_digests(w: &Shop, s: &Supply, app_pod: &str) {
    let c = &w.cluster;
    let image_ids = |ns: &str, args: &[&str]| -> Vec<(String, String)> {
        let mut a = vec!["-n", ns, "get", "pods"];
        a.extend_from_slice(args);
        let pods = c.get_json(&a);
        let items = pods["items"].as_array().cloned().unwrap_or_else(|| vec![pods.clone()]);
        items
            .iter()
            .flat_map(|p| {
                let st = &p["status"];
                st["initContainerStatuses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(st["containerStatuses"].as_array().into_iter().flatten())
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .map(|s| (s["name"].as_str().unwrap_or("").to_owned(), s["imageID"].as_str().unwrap_or("").to_owned()))
            .collect()
    };
    let injectors = image_ids("sidekey", &["-l", "app.kubernetes.io/name=sidekey-injector"]);
    assert_eq!(injectors.len(), 2, "{injectors:?}");
    for (_, id) in &injectors {
        assert_eq!(id, &s.injector.pinned(), "the injector runs the signed digest");
    }
    let app = image_ids("shop", &[app_pod]);
    let agent = app.iter().find(|(n, _)| n == "sidekey-agent").unwrap_or_else(|| panic!("no agent in {app:?}"));
    assert_eq!(agent.1, s.agent.pinned(), "the injected agent runs the signed digest, not the tampered tag");
}

/// A pod on the node: it runs, resolves a Service name through cluster DNS
/// and reaches the apiserver through the `kubernetes` Service.
fn a_pod_runs_and_reaches_services_by_name(c: &Cluster) {
    c.apply_ok(
        r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe", "namespace": "default"},
            "spec": {"containers": [{"name": "sh", "image": "sidekey.test/testbox:1", "imagePullPolicy": "Never",
              "command": ["/bin/busybox", "sleep", "3600"],
              "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                                  "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}}]}}"#,
    );
    c.wait_ready("default", "probe", Duration::from_secs(60));
    let out = c.exec("default", "probe", "sh", &["/bin/busybox", "nslookup", "kubernetes.default.svc.cluster.local"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(sidekey_testenv::node::API_SERVICE_IP),
        "cluster DNS: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A TCP connection to the apiserver through the `kubernetes` Service
    // (kube-proxy's rules to the advertised node address). OpenBao's
    // TokenReview calls below go the same way over TLS.
    let out = c.exec(
        "default",
        "probe",
        "sh",
        &["/bin/busybox", "sh", "-c", "/bin/busybox nc -w 2 kubernetes.default.svc 443 </dev/null"],
    );
    assert!(out.status.success(), "kubernetes Service: {}", String::from_utf8_lossy(&out.stderr));
    let closed = c.exec(
        "default",
        "probe",
        "sh",
        &["/bin/busybox", "sh", "-c", "/bin/busybox nc -w 2 kubernetes.default.svc 444 </dev/null"],
    );
    assert!(!closed.status.success(), "nc must fail on a port nothing serves");
    c.api.kubectl_ok(&["delete", "pod", "probe", "--wait=false"]);
}

/// `helm install` of deploy/helm/sidekey with self-managed TLS: both
/// injector replicas run, the webhook configuration gets its caBundle, and
/// the apiserver reaches the webhook through its Service.
fn helm_installs_the_injector(w: &Shop, s: &Supply) {
    let c = &w.cluster;
    w.helm_install_with(&[
        format!("injector.image.repository={}", s.injector.repository),
        format!("injector.image.digest={}", s.injector.digest),
        format!("agent.image.repository={}", s.agent.repository),
        format!("agent.image.digest={}", s.agent.digest),
        // Every agent serves /metrics on its pod's address, for Prometheus.
        "agent.metricsPort=9464".to_owned(),
        "agent.metricsListen=pod-ip".to_owned(),
    ]);
    let pods = c.get_json(&["-n", "sidekey", "get", "pods", "-l", "app.kubernetes.io/name=sidekey-injector"]);
    let running = pods["items"].as_array().unwrap().iter().filter(|p| p["status"]["phase"] == "Running").count();
    assert_eq!(running, 2, "two injector replicas run: {pods}");
    let webhook = c.get_json(&["get", "mutatingwebhookconfiguration", "sidekey-injector"]);
    let ca_bundle = webhook["webhooks"][0]["clientConfig"]["caBundle"].as_str().unwrap_or_default();
    assert!(!ca_bundle.is_empty(), "the injector filled in the caBundle: {webhook}");
    assert_eq!(webhook["webhooks"][0]["clientConfig"]["service"]["name"], "sidekey-injector");
    // Each replica checks the configuration as the apiserver uses it: the
    // caBundle trusts what it serves, and sidekey-injector.sidekey.svc
    // (cluster DNS, kube-proxy) completes a verified TLS handshake.
    for p in pods["items"].as_array().unwrap() {
        let name = p["metadata"]["name"].as_str().unwrap();
        let path = format!("/api/v1/namespaces/sidekey/pods/{name}:9090/proxy/metrics");
        let healthy = |check: &str| format!("sidekey_injector_webhook_configuration_healthy{{check=\"{check}\"}} 1");
        let metrics = || String::from_utf8_lossy(&c.api.kubectl(&["get", "--raw", &path]).stdout).into_owned();
        sidekey_testenv::wait_until(
            &format!("{name} to find its webhook configuration healthy"),
            Duration::from_secs(60),
            || ["configuration", "ca_bundle", "service"].iter().all(|k| metrics().contains(&healthy(k))),
            || format!("{}\n{}", metrics(), c.api.kubectl_ok(&["-n", "sidekey", "logs", name])),
        );
    }
    // Least privilege: the injector filled the Secret the chart created
    // empty; it may not create Secrets (it could mint ServiceAccount tokens).
    let sa = "--as=system:serviceaccount:sidekey:sidekey-injector";
    let can = |args: &[&str]| {
        let mut a = vec!["auth", "can-i", sa, "-n", "sidekey"];
        a.extend_from_slice(args);
        String::from_utf8_lossy(&c.api.kubectl(&a).stdout).trim().to_owned()
    };
    assert_eq!(can(&["create", "secrets"]), "no");
    assert_eq!(can(&["update", "secrets/sidekey-injector-tls"]), "yes");
    let secret = c.get_json(&["-n", "sidekey", "get", "secret", "sidekey-injector-tls"]);
    assert!(secret["data"]["ca.crt"].as_str().is_some_and(|v| !v.is_empty()), "the injector filled the Secret");
    // Helm still owns it: an upgrade goes through and keeps the certificate.
    let chart = sidekey_testenv::shop::repo_root().join("deploy/helm/sidekey");
    w.helm(&["upgrade", "sidekey", &chart.display().to_string(), "-n", "sidekey", "--reuse-values", "--wait"]);
    let after = c.get_json(&["-n", "sidekey", "get", "secret", "sidekey-injector-tls"]);
    assert_eq!(after["data"]["ca.crt"], secret["data"]["ca.crt"], "the upgrade kept the CA");
}

/// Through the webhook: a pod with a bad annotation is refused with the
/// injector's message; a pod that does not opt in is stored unchanged.
fn the_webhook_refuses_bad_pods_and_leaves_others_alone(w: &Shop) {
    let c = &w.cluster;
    let pod = |name: &str, labels: Value, annotations: Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels, "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "sidekey.test/testbox:1", "imagePullPolicy": "Never",
                "command": ["/bin/busybox", "sleep", "3600"],
                "env": [{"name": "TOKEN", "value": "vault:secret/data/x#y"}]}]}})
        .to_string()
    };
    let out = c.apply(&pod(
        "bad",
        json!({"sidekey.dev/inject": "true"}),
        json!({"sidekey.dev/inject": "true", "sidekey.dev/secret-../../etc/passwd": "vault:secret/data/x#y"}),
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a pod with a traversal in a secret name must be refused");
    assert!(
        err.contains("admission webhook \"inject.sidekey.dev\" denied the request")
            && err.contains("sidekey.dev/secret-../../etc/passwd"),
        "{err}"
    );
    assert!(c.api.kubectl(&["get", "pod", "bad"]).stdout.is_empty());

    let plain = pod("plain", json!({"app": "plain"}), json!({"team": "a"}));
    c.apply_ok(&plain);
    let stored = c.get_json(&["get", "pod", "plain"]);
    assert_eq!(stored["spec"]["containers"].as_array().unwrap().len(), 1);
    assert!(stored["spec"]["initContainers"].is_null(), "no agent: {stored}");
    assert!(stored["metadata"]["annotations"]["sidekey.dev/status"].is_null());
    assert_eq!(stored["spec"]["containers"][0]["env"][0]["value"], "vault:secret/data/x#y");
    c.api.kubectl_ok(&["delete", "pod", "plain", "--wait=false"]);
}

/// The example workload, applied as users would into a namespace that
/// enforces `restricted`: the agent is a native sidecar, the app starts
/// after every file exists, the volume is tmpfs and read-only in the app,
/// files follow the access rule, and no value reaches the spec or etcd.
fn the_example_app_runs_with_its_secrets_in_files(w: &Shop) -> String {
    let c = &w.cluster;
    // The example as it is, but the image with a busybox beside the app so
    // the test can look inside the container, and a short refresh for the
    // KV check below.
    let pod = w.apply_orders_app("sidekey.test/example-app-debug:1", &[("sidekey.dev/refresh", "2s")]);
    let stored = c.get_json(&["-n", "shop", "get", "pod", &pod]);

    // The agent is a native sidecar, first among the init containers.
    let agent = &stored["spec"]["initContainers"][0];
    assert_eq!(agent["name"], "sidekey-agent");
    assert_eq!(agent["restartPolicy"], "Always");
    assert!(agent["startupProbe"].is_object());
    assert_eq!(stored["metadata"]["annotations"]["sidekey.dev/status"], "injected");

    // The app started only once the agent's startup probe passed (every file
    // existed): its start is after the agent's, and its first line is a
    // successful connection, not a missing file.
    let started = |list: &str, name: &str| -> String {
        let st = stored["status"][list].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap();
        st["state"]["running"]["startedAt"].as_str().unwrap().to_owned()
    };
    assert!(started("containerStatuses", "app") >= started("initContainerStatuses", "sidekey-agent"));
    let app_log = c.api.kubectl_ok(&["-n", "shop", "logs", &pod, "-c", "app"]);
    assert!(app_log.lines().next().is_some_and(|l| l.starts_with("connected as ")), "{app_log}");

    // Inside the app container: tmpfs, read-only, files by the access rule
    // (fsGroup 10001: mode 0440, group 10001).
    let sh = |cmd: &str| c.exec("shop", &pod, "app", &["/bin/busybox", "sh", "-c", cmd]);
    let mounts = String::from_utf8(sh("cat /proc/mounts").stdout).unwrap();
    let line = mounts.lines().find(|l| l.split(' ').nth(1) == Some("/run/secrets/sidekey")).unwrap();
    assert!(line.starts_with("tmpfs ") && line.split(' ').nth(3).unwrap().split(',').any(|o| o == "ro"), "{line}");
    let write = sh("echo x > /run/secrets/sidekey/planted");
    assert!(!write.status.success() && String::from_utf8_lossy(&write.stderr).contains("Read-only file system"));
    let listing =
        String::from_utf8(sh("cd /run/secrets/sidekey && /bin/busybox stat -L -c '%n %a %u %g' *").stdout).unwrap();
    let files: Vec<&str> = listing.lines().collect();
    assert!(files.len() >= 3, "api-key and the two database files: {listing}");
    for f in &files {
        let parts: Vec<&str> = f.split(' ').collect();
        assert_eq!(&parts[1..], &["440", "10001", "10001"][..], "{listing}");
    }
    // The login token is the agent's alone.
    assert!(!mounts.contains("sidekey-token") && !sh("ls /var/run/secrets/kubernetes.io").status.success());

    // No value in the stored pod, nor anywhere in etcd.
    let env_files = |name: &str| app_env(&stored, name);
    let password = String::from_utf8(sh(&format!("cat {}", env_files("DB_PASSWORD_FILE"))).stdout).unwrap();
    assert!(password.len() >= 16, "the password file holds a password");
    let api_key = String::from_utf8(sh("cat /run/secrets/sidekey/api-key").stdout).unwrap();
    assert_eq!(api_key, w.api_key);
    let pod_yaml = c.api.kubectl_ok(&["-n", "shop", "get", "pod", &pod, "-o", "yaml"]);
    for value in [&password, &w.api_key] {
        assert!(!pod_yaml.contains(value.as_str()), "a secret value is in the pod spec");
        let needle = value.as_bytes();
        let in_etcd = c.etcd_values().iter().any(|v| v.windows(needle.len()).any(|w| w == needle));
        assert!(!in_etcd, "a secret value is in etcd");
    }
    pod
}

/// The app follows rotating database credentials (TTL 10 s, max 30 s) for
/// 60 s in its pod (counted from `begun`, its start: the other steps run
/// meanwhile): no failed query, at least three distinct users.
fn the_app_follows_rotating_credentials_for_a_minute(w: &Shop, pod: &str, begun: Instant) {
    let c = &w.cluster;
    let users = |log: &str| -> std::collections::BTreeSet<String> {
        log.lines().filter_map(|l| l.split(" as ").nth(1)).map(str::to_owned).collect()
    };
    // The steps between may take more than a minute (a slow machine): the
    // log is read before any bound is checked, and waiting is bounded from
    // this step's start.
    let step = Instant::now();
    let log = loop {
        let log = c.api.kubectl_ok(&["-n", "shop", "logs", pod, "-c", "app"]);
        if begun.elapsed() >= Duration::from_secs(60) && users(&log).len() >= 3 {
            break log;
        }
        assert!(step.elapsed() < Duration::from_secs(120), "fewer than 3 users in {:?}: {log}", begun.elapsed());
        std::thread::sleep(Duration::from_secs(2));
    };
    assert!(!log.contains("failed"), "the app saw a failure: {log}");
    let rotations = log.lines().filter(|l| l.starts_with("credentials rotated")).count();
    assert!(rotations >= 2, "{log}");
    let issued = w.bao.count_answered(|p| p == "database/creds/orders");
    let agent = c.api.kubectl_ok(&["-n", "shop", "logs", pod, "-c", "sidekey-agent"]);
    // A read the active server answered while the standby that forwarded
    // it lost the answer in a leader election: the agent saw an error and
    // read again, and the first credential ends with its TTL unused.
    let lost = lost_answers(&agent, "GET database/creds/orders");
    let audited: Vec<String> = w
        .bao
        .audit_entries()
        .iter()
        .filter(|e| e["request"]["path"] == "database/creds/orders")
        .map(|e| format!("{} {} {} {}", e["time"], e["type"], e["request"]["id"], e["error"]))
        .collect();
    assert!(
        (users(&log).len()..=users(&log).len() + lost).contains(&issued),
        "one credential per user seen ({issued} issued, {lost} answers lost): {log}\naudit:\n{}\nagent:\n{agent}",
        audited.join("\n")
    );
    assert!(!w.pg.log().contains("password authentication failed"), "{}", w.pg.log());
}

/// A new KV version reaches the file in the app container within the
/// pod's `refresh` (2 s) plus 1 s.
fn a_kv_update_reaches_the_app_container_within_refresh(w: &Shop, pod: &str) {
    let rotated = format!("{}-v2", w.api_key);
    w.bao.kv_put("shop/orders", json!({"api_key": rotated}));
    let written = Instant::now();
    loop {
        let out = w.cluster.exec("shop", pod, "app", &["/bin/busybox", "cat", "/run/secrets/sidekey/api-key"]);
        if out.stdout == rotated.as_bytes() {
            break;
        }
        assert!(written.elapsed() < Duration::from_secs(3), "the new version did not arrive within refresh + 1 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("kv update visible in the app container after {:.2}s", written.elapsed().as_secs_f64());
}

/// The agent container killed (as the OOM killer or a crash would): the
/// kubelet restarts it, the app reads its files the whole time, and the new
/// agent adopts the token and lease of the old one from its state volume,
/// so no database credential is issued that rotation did not need.
fn a_killed_agent_is_restarted_without_new_credentials(w: &Shop, pod: &str) {
    let c = &w.cluster;
    // Right after a rotation the credential has most of its 30 s ahead, so
    // nothing is due while we watch.
    let rotations = |log: &str| log.lines().filter(|l| l.starts_with("credentials rotated")).count();
    let seen = rotations(&c.api.kubectl_ok(&["-n", "shop", "logs", pod, "-c", "app"]));
    let deadline = Instant::now() + Duration::from_secs(40);
    while rotations(&c.api.kubectl_ok(&["-n", "shop", "logs", pod, "-c", "app"])) == seen {
        assert!(Instant::now() < deadline, "no rotation within 40 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let stored = c.get_json(&["-n", "shop", "get", "pod", pod]);
    let file = |name: &str| app_env(&stored, name);
    let (user_file, password_file) = (file("DB_USERNAME_FILE"), file("DB_PASSWORD_FILE"));
    let read = |f: &str| c.exec("shop", pod, "app", &["/bin/busybox", "cat", f]);
    let user = read(&user_file).stdout;
    let issued = w.bao.count_answered(|p| p == "database/creds/orders");
    let before = agent_restarts(&stored);
    c.kill_container("shop", pod, "sidekey-agent");
    let killed = Instant::now();
    let mut reads = 0;
    loop {
        for f in [&user_file, &password_file] {
            let out = read(f);
            assert!(
                out.status.success() && !out.stdout.is_empty(),
                "the app could not read {f} while the agent restarted"
            );
            reads += 1;
        }
        let p = c.get_json(&["-n", "shop", "get", "pod", pod]);
        let ready = p["status"]["initContainerStatuses"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "sidekey-agent" && s["ready"] == true && s["started"] == true);
        if agent_restarts(&p) > before && ready {
            break;
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "the kubelet did not restart the agent: {p}");
    }
    eprintln!(
        "agent restarted {:.1}s after the kill; {reads} reads in the app meanwhile",
        killed.elapsed().as_secs_f64()
    );
    let log = c.api.kubectl_ok(&["-n", "shop", "logs", pod, "-c", "sidekey-agent"]);
    assert!(log.contains("adopted the lease of the previous run"), "{log}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(w.bao.count_answered(|p| p == "database/creds/orders"), issued, "the restart issued a credential");
    assert!(read(&user_file).stdout == user, "the restart changed the credential");
}

/// The active OpenBao server killed (as a crash would kill it) while the
/// app's credentials keep rotating: a standby takes the Raft leadership,
/// the agent carries on through the Service, and the app sees no failure
/// (the rotation step, which spans this one, reads every query it made);
/// the killed server comes back sealed, is unsealed and rejoins.
fn the_active_openbao_killed_costs_the_app_nothing(w: &Shop, prom: &Prometheus, pod: &str) {
    let c = &w.cluster;
    let rotations = || {
        let log = c.api.kubectl_ok(&["-n", "shop", "logs", pod, "-c", "app"]);
        log.lines().filter(|l| l.starts_with("credentials rotated")).count()
    };
    // Right after a rotation the new lease (TTL 10 s) is renewed at about
    // two thirds of its life: a kill 6 s after it puts that renewal, or
    // the read after it, inside the leader election.
    let before = rotations();
    let deadline = Instant::now() + Duration::from_secs(40);
    while rotations() == before {
        assert!(Instant::now() < deadline, "no rotation within 40 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(6));
    let active = w.bao.active_pod().expect("the Raft cluster has an active server");
    let seen = rotations();
    c.kill_container("vault", &active, "openbao");
    let killed = Instant::now();
    let killed_wall = std::time::SystemTime::now();
    let mut leader = None;
    while leader.is_none() {
        assert!(killed.elapsed() < Duration::from_secs(30), "no new active server within 30 s of killing {active}");
        leader = w.bao.active_pod().filter(|p| *p != active);
        std::thread::sleep(Duration::from_millis(100));
    }
    let failover = killed.elapsed();
    while rotations() == seen {
        assert!(killed.elapsed() < Duration::from_secs(60), "no rotation within 60 s of the failover");
        std::thread::sleep(Duration::from_millis(200));
    }
    let rotated = killed.elapsed();
    // What Prometheus says of it (not asserted: an alert needs the agent to
    // have met a failed request, which depends on where the election fell).
    std::thread::sleep(Duration::from_secs(3 * prometheus::INTERVAL_S));
    let alerts: Vec<String> = prom
        .alerts()
        .iter()
        .filter(|a| a["labels"]["pod"] == pod)
        .map(|a| {
            let at = a["activeAt"].as_str().map_or(f64::NAN, seconds_of_day);
            // Signed: an alert may have been active since an earlier step.
            let after = (at - seconds_of_day_now(killed_wall) + 43_200.0).rem_euclid(86_400.0) - 43_200.0;
            format!("{} {} since {after:+.1}s from the kill", a["labels"]["alertname"], a["state"])
        })
        .collect();
    eprintln!("failover: alerts for {pod}: {}", if alerts.is_empty() { "none".into() } else { alerts.join(", ") });
    w.bao.unseal_pod(c, &active);
    eprintln!(
        "failover: {active} killed; {} active after {:.1}s; the app's next rotation {:.1}s after the kill; {active} unsealed and back {:.1}s after it",
        leader.unwrap_or_default(),
        failover.as_secs_f64(),
        rotated.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
}

/// How long the store is cut off in [`openbao_cut_off_longer_than_a_lease`]:
/// twice the credential's max TTL (30 s).
const CUT: Duration = Duration::from_secs(60);

/// OpenBao unreachable from the example app's pod (every TCP packet from it
/// to any OpenBao server rejected in the node's network namespace) for
/// longer than its credential's max TTL: the files keep their last content
/// the whole time, the real Prometheus fires `SidekeyCredentialExpiring`
/// for the pod's lease, and once the cut ends the agent (never restarted)
/// reads a new credential, the app moves to it and the alert resolves.
fn openbao_cut_off_longer_than_a_lease(w: &Shop, prom: &Prometheus, pod: &str) {
    let c = &w.cluster;
    let stored = c.get_json(&["-n", "shop", "get", "pod", pod]);
    let pod_ip = stored["status"]["podIP"].as_str().unwrap().to_owned();
    let bao_ips: Vec<String> = c
        .api
        .kubectl_ok(&["-n", "vault", "get", "pods", "-o", "jsonpath={.items[*].status.podIP}"])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(bao_ips.len(), 3, "{bao_ips:?}");
    let restarts = agent_restarts(&stored);
    let app_log = || c.api.kubectl_ok(&["-n", "shop", "logs", pod, "-c", "app"]);
    let lines_before = app_log().lines().count();
    let (user_file, password_file) = (app_env(&stored, "DB_USERNAME_FILE"), app_env(&stored, "DB_PASSWORD_FILE"));
    let read = |f: &str| c.exec("shop", pod, "app", &["/bin/busybox", "cat", f]).stdout;
    let api_key = read("/run/secrets/sidekey/api-key");
    let user = read(&user_file);
    let issued = w.bao.count_answered(|p| p == "database/creds/orders");
    let expiring = || {
        prom.alerts().into_iter().find(|a| {
            a["labels"]["alertname"] == "SidekeyCredentialExpiring"
                && a["labels"]["pod"] == pod
                && a["state"] == "firing"
                && a["labels"]["source"].as_str().is_some_and(|s| s.contains("database/creds/orders"))
        })
    };
    assert!(expiring().is_none(), "the alert fires before the cut: {}", alerts_so_far(prom));

    let cut = c.reject_traffic(&pod_ip, &bao_ips);
    let begun = Instant::now();
    let mut fired = None;
    let mut reads = 0;
    while begun.elapsed() < CUT {
        for f in [user_file.as_str(), password_file.as_str()] {
            assert!(!read(f).is_empty(), "{f} was emptied {:.1}s into the cut", begun.elapsed().as_secs_f64());
            reads += 1;
        }
        assert_eq!(read("/run/secrets/sidekey/api-key"), api_key, "the KV file changed during the cut");
        if fired.is_none() && expiring().is_some() {
            fired = Some(begun.elapsed());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(read(&user_file), user, "a credential arrived while the store was cut off");
    // The lease ended within the cut (max TTL 30 s): the credential in the
    // files no longer opens a connection, whatever the app's open one does.
    let (name, password) = (String::from_utf8(user.clone()).unwrap(), String::from_utf8(read(&password_file)).unwrap());
    let login = w.pg.psql(name.trim(), password.trim(), "SELECT 1");
    let refused = login.expect_err("the credential still logs in after its lease ended");
    let during = app_log();
    drop(cut);
    let ended = Instant::now();
    let fired = fired.unwrap_or_else(|| {
        panic!(
            "SidekeyCredentialExpiring did not fire in {CUT:?} of a cut; alerts: {}; the agent's log:\n{}",
            alerts_so_far(prom),
            c.api.kubectl_ok(&["-n", "shop", "logs", pod, "-c", "sidekey-agent", "--tail=30"])
        )
    });

    // After the cut: a new credential, the app on it, the alert resolved.
    let moved = |log: &str| {
        log.lines()
            .skip(lines_before)
            .any(|l| l.starts_with("credentials rotated: reconnected as ") || l.starts_with("connected as "))
    };
    while !moved(&app_log()) {
        assert!(ended.elapsed() < Duration::from_secs(90), "the app had no new credential 90 s after the cut");
        std::thread::sleep(Duration::from_millis(250));
    }
    let recovered = ended.elapsed();
    while expiring().is_some() {
        assert!(ended.elapsed() < Duration::from_secs(120), "the alert still fires 120 s after the cut");
        std::thread::sleep(Duration::from_millis(500));
    }
    let resolved = ended.elapsed();
    let now = c.get_json(&["-n", "shop", "get", "pod", pod]);
    assert_eq!(agent_restarts(&now), restarts, "the agent restarted");
    let failed: Vec<&str> = during.lines().skip(lines_before).filter(|l| l.contains("failed")).collect();
    let after = app_log();
    let failed_after: Vec<&str> = after.lines().skip(during.lines().count()).filter(|l| l.contains("failed")).collect();
    let issued_now = w.bao.count_answered(|p| p == "database/creds/orders");
    eprintln!(
        "store cut off for {:.0}s: {reads} reads of the credential files, none empty; SidekeyCredentialExpiring firing {:.1}s into the cut; \
         the app's failed queries: {} during the cut, {} after it; a new credential in the app {:.1}s after the cut, the alert resolved after {:.1}s; \
         {} credentials issued since the cut began; agent restarts: 0; a new login with the files' credential at the cut's end: {}",
        CUT.as_secs_f64(),
        fired.as_secs_f64(),
        failed.len(),
        failed_after.len(),
        recovered.as_secs_f64(),
        resolved.as_secs_f64(),
        issued_now - issued,
        refused.lines().last().unwrap_or_default(),
    );
    for l in failed.iter().chain(&failed_after).take(5) {
        eprintln!("store cut off: the app logged: {l}");
    }
}

/// The kubelet restarted, then containerd, each as a service manager
/// restarts it (SIGTERM, then started again): the example app's pod keeps
/// every container (no restart), its files stay readable on the node the
/// whole time (read there, as `kubectl exec` needs the kubelet), rotation
/// goes on, and the agent neither logs in again nor gets a credential that
/// rotation did not ask for.
fn kubelet_and_containerd_restarts_cost_the_pod_nothing(w: &Shop, pod: &str) {
    use std::sync::atomic::AtomicUsize;
    let c = &w.cluster;
    let stored = c.get_json(&["-n", "shop", "get", "pod", pod]);
    let uid = stored["metadata"]["uid"].as_str().unwrap().to_owned();
    let pod_ip = stored["status"]["podIP"].as_str().unwrap().to_owned();
    let before = restart_counts(&stored);
    let volume = secrets_on_node(c, &uid);
    let files: Vec<String> = ["DB_USERNAME_FILE", "DB_PASSWORD_FILE"]
        .iter()
        .map(|v| app_env(&stored, v).rsplit('/').next().unwrap().to_owned())
        .chain(["api-key".to_owned()])
        .collect();
    let read_on_node = |name: &str| read_on_node(c, &volume.join(name));
    for f in &files {
        assert!(!read_on_node(f).is_empty(), "{f} is not readable on the node at {}", volume.display());
    }
    let logins = || {
        w.bao
            .audit_entries()
            .iter()
            .filter(|e| e["type"] == "response" && e["request"]["path"] == "auth/kubernetes/login")
            .filter(|e| e["request"]["remote_address"] == pod_ip.as_str())
            .count()
    };
    // Until a restarted kubelet has synced the pod it answers 404 for its
    // logs: waited out.
    let app_log = || {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = c.api.kubectl(&["-n", "shop", "logs", pod, "-c", "app"]);
            if out.status.success() {
                break String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(Instant::now() < deadline, "no logs of {pod}: {}", String::from_utf8_lossy(&out.stderr));
            std::thread::sleep(Duration::from_millis(250));
        }
    };
    let rotations = |log: &str| log.lines().filter(|l| l.starts_with("credentials rotated")).count();
    let (logins_before, issued_before) = (logins(), w.bao.count_answered(|p| p == "database/creds/orders"));
    let log_before = app_log();
    let rotations_before = rotations(&log_before);

    let done = AtomicBool::new(false);
    let (reads, empty) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let mut report = Vec::new();
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&done);
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                for f in &files {
                    reads.fetch_add(1, Ordering::SeqCst);
                    if read_on_node(f).is_empty() {
                        empty.fetch_add(1, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        for daemon in ["kubelet", "containerd"] {
            let seen = rotations(&app_log());
            let back = c.restart_daemon(daemon);
            let restarted = Instant::now();
            while rotations(&app_log()) == seen {
                assert!(
                    restarted.elapsed() < Duration::from_secs(60),
                    "no rotation within 60 s of restarting {daemon}"
                );
                std::thread::sleep(Duration::from_millis(250));
            }
            report.push(format!(
                "{daemon} restarted: node Ready after {:.1}s, the app's next rotation {:.1}s later",
                back.as_secs_f64(),
                restarted.elapsed().as_secs_f64()
            ));
        }
    });
    let now = c.get_json(&["-n", "shop", "get", "pod", pod]);
    assert_eq!(restart_counts(&now), before, "a container restarted: {}", now["status"]);
    let log = app_log();
    let failed: Vec<&str> = log.lines().skip(log_before.lines().count()).filter(|l| l.contains("failed")).collect();
    assert!(failed.is_empty(), "the app saw failures: {failed:?}");
    assert_eq!(empty.load(Ordering::SeqCst), 0, "a file was unreadable or empty on the node during a restart");
    assert_eq!(logins(), logins_before, "the agent logged in again");
    let (rotated, issued) =
        (rotations(&log) - rotations_before, w.bao.count_answered(|p| p == "database/creds/orders") - issued_before);
    // One credential per rotation; the one being read as we count may not
    // have reached the app yet.
    assert!((rotated..=rotated + 1).contains(&issued), "{issued} credentials issued for {rotated} rotations");
    eprintln!(
        "node daemons: {}; {} reads of the files on the node meanwhile, none empty; {rotated} rotations, {issued} credentials, 0 logins, 0 container restarts",
        report.join("; "),
        reads.load(Ordering::SeqCst)
    );
}

/// How long kube-apiserver is down in [`the_apiserver_down_for_a_minute`].
const API_OUTAGE: Duration = Duration::from_secs(60);

/// kube-apiserver down for a minute (stopped, then started again): the pods
/// keep running and the agent keeps renewing and rotating without it (the
/// credential files, read on the node, change with each rotation); a
/// Kubernetes-auth login meanwhile fails, as OpenBao must ask the
/// apiserver (TokenReview) whether the pod's token is valid. After the
/// restart no container has restarted and the app saw no failure.
fn the_apiserver_down_for_a_minute(w: &Shop, pod: &str) {
    let c = &w.cluster;
    let stored = c.get_json(&["-n", "shop", "get", "pod", pod]);
    let uid = stored["metadata"]["uid"].as_str().unwrap();
    let user_file = app_env(&stored, "DB_USERNAME_FILE").rsplit('/').next().unwrap().to_owned();
    let volume = secrets_on_node(c, uid);
    let read_user = || String::from_utf8_lossy(&read_on_node(c, &volume.join(&user_file))).into_owned();
    let before = restart_counts(&stored);
    let log_lines = c.api.kubectl_ok(&["-n", "shop", "logs", pod, "-c", "app"]).lines().count();
    let jwt = c.api.token_request("shop", "orders", "sidekey");
    w.bao.kubernetes_login("orders", &jwt).expect("a Kubernetes-auth login works before the outage");

    c.api.stop_apiserver();
    let down = Instant::now();
    let mut users = vec![read_user()];
    let mut login = None;
    while down.elapsed() < API_OUTAGE {
        let user = read_user();
        assert!(!user.is_empty(), "the username file was empty {:.1}s into the outage", down.elapsed().as_secs_f64());
        if users.last() != Some(&user) {
            users.push(user);
        }
        if login.is_none() && down.elapsed() > Duration::from_secs(5) {
            login = Some(w.bao.kubernetes_login("orders", &jwt));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let back = c.api.start_apiserver();
    let refused = login.unwrap().expect_err("a Kubernetes-auth login succeeded with the apiserver down");
    assert!(users.len() >= 2, "no rotation in {API_OUTAGE:?} without the apiserver");
    // Not the pod's Ready condition: after 40 s without the kubelet's
    // heartbeat the node controller marks the node's pods not ready, and
    // when that is undone is the control plane's business (in 1 of 4 runs
    // it was not within 60 s). What the pod did is in its containers'
    // restart counts, the app's log and the files.
    let now = c.get_json(&["-n", "shop", "get", "pod", pod]);
    assert_eq!(restart_counts(&now), before, "a container restarted: {}", now["status"]);
    let log = c.api.kubectl_ok(&["-n", "shop", "logs", pod, "-c", "app"]);
    let failed: Vec<&str> = log.lines().skip(log_lines).filter(|l| l.contains("failed")).collect();
    assert!(failed.is_empty(), "the app saw failures: {failed:?}");
    // Logins resume once the restarted apiserver answers TokenReview as
    // before (its authorizer's caches fill after it reports ready).
    let ready = Instant::now();
    let mut last = String::new();
    while let Err(e) = w.bao.kubernetes_login("orders", &jwt) {
        last = e;
        assert!(ready.elapsed() < Duration::from_secs(60), "no Kubernetes-auth login 60 s after the outage: {last}");
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "apiserver down {:.0}s: {} credentials in the app's files meanwhile (the agent rotated without it); a Kubernetes-auth login during the outage: {}; the apiserver ready {:.1}s after its start; logins again {:.1}s after that{}; 0 container restarts, 0 failed queries",
        API_OUTAGE.as_secs_f64(),
        users.len(),
        refused.lines().next().unwrap_or_default().chars().take(200).collect::<String>(),
        back.as_secs_f64(),
        ready.elapsed().as_secs_f64(),
        if last.is_empty() { String::new() } else { format!(" (until then: {})", last.trim()) }
    );
}

/// Agents at tight limits set by annotation. Throttled to 25 millicores in
/// 16 MiB of memory: the agent still starts and keeps the database
/// credential rotating. Memory below what it needs (1 MiB): the agent
/// cannot run, the app never starts (no file at all rather than a stale
/// one), and the pod's status says why, for `kubectl describe` and the
/// kubelet's events.
fn agents_at_their_limits_serve_or_fail_loudly(w: &Shop) {
    let c = &w.cluster;
    let annotations = |cpu: &str, memory: &str| {
        json!({"sidekey.dev/secret-db-user": "vault:database/creds/orders#username",
            "sidekey.dev/agent-cpu-request": cpu, "sidekey.dev/agent-cpu-limit": cpu,
            "sidekey.dev/agent-memory-request": memory, "sidekey.dev/agent-memory-limit": memory})
    };
    let script = "while true; do /bin/busybox cat /run/secrets/sidekey/db-user; echo; /bin/busybox sleep 1; done";
    c.apply_ok(&shop_pod("throttled", annotations("25m", "16Mi"), json!({}), script));
    c.apply_ok(&shop_pod("starved", annotations("100m", "1Mi"), json!({}), script));
    let created = Instant::now();
    c.wait_ready("shop", "throttled", Duration::from_secs(120));
    let ready = created.elapsed();
    // Rotation goes on at 5 millicores: new users in the app's view.
    let users = || -> std::collections::BTreeSet<String> {
        let out = c.api.kubectl(&["-n", "shop", "logs", "throttled", "-c", "app"]);
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).map(str::to_owned).collect()
    };
    let watched = Instant::now();
    while users().len() < 3 {
        assert!(
            watched.elapsed() < Duration::from_secs(90),
            "fewer than 3 credentials in 90 s at 5m CPU and 4Mi: {:?}",
            users()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let rotated = watched.elapsed();
    // The starved agent: its container's status gives the reason.
    let agent_status = |p: &Value| -> Value {
        p["status"]["initContainerStatuses"]
            .as_array()
            .and_then(|l| l.iter().find(|s| s["name"] == "sidekey-agent").cloned())
            .unwrap_or_default()
    };
    let reason = |s: &Value| -> Option<String> {
        s["lastState"]["terminated"]["reason"].as_str().or(s["state"]["waiting"]["reason"].as_str()).map(str::to_owned)
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let (starved, why) = loop {
        let p = c.get_json(&["-n", "shop", "get", "pod", "starved"]);
        let s = agent_status(&p);
        if let Some(r) = reason(&s).filter(|r| r != "PodInitializing" && r != "ContainerCreating") {
            break (p, r);
        }
        assert!(Instant::now() < deadline, "the starved agent shows no reason after 90 s: {}", p["status"]);
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        ["OOMKilled", "StartError", "CrashLoopBackOff", "RunContainerError", "CreateContainerError"]
            .contains(&why.as_str()),
        "{why}: {}",
        starved["status"]
    );
    let app = starved["status"]["containerStatuses"][0].clone();
    assert!(
        app["state"]["running"].is_null() && app["lastState"].as_object().is_none_or(|o| o.is_empty()),
        "the app started without its files: {app}"
    );
    let events = c.api.kubectl_ok(&[
        "-n",
        "shop",
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=starved",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    eprintln!(
        "agents at their limits: at 25m CPU and 16Mi ready {:.1}s after creation and the next credential in the app {:.1}s later; at 1Mi memory the agent's status says {why} (restarts: {}), the app never started; events: {}",
        ready.as_secs_f64(),
        rotated.as_secs_f64(),
        agent_status(&starved)["restartCount"],
        events.trim()
    );
    c.api.kubectl_ok(&["-n", "shop", "delete", "pod", "throttled", "starved", "--grace-period=1", "--timeout=60s"]);
}

/// The node rebooted, simulated ([`Cluster::reboot`]): every container
/// killed, every tmpfs gone, containerd and the kubelet started again. The
/// pods come back in new sandboxes; OpenBao's three servers come back
/// sealed and the test unseals them, as an operator (or auto-unseal) would;
/// every agent starts from nothing (its state volume was in memory), logs
/// in and reads its secrets anew, and the app answers again. Counted: the
/// agents' logins and credentials against the pods that hold an agent.
fn a_rebooted_node_brings_every_pod_back(w: &Shop, pod: &str) {
    let c = &w.cluster;
    let with_agent = |ns: &str| -> Vec<String> {
        c.get_json(&["-n", ns, "get", "pods"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["status"]["phase"] == "Running")
            .filter(|p| {
                p["spec"]["initContainers"].as_array().is_some_and(|l| l.iter().any(|c| c["name"] == "sidekey-agent"))
            })
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let agents = with_agent("shop");
    assert!(agents.iter().any(|p| p == pod), "{agents:?}");
    // Counted by time: the servers' logs before the reboot are partly gone
    // (kubectl keeps one previous run of a container).
    let since = String::from_utf8(
        std::process::Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%S"]).output().unwrap().stdout,
    )
    .unwrap()
    .trim()
    .to_owned();
    let count = |path: &str| {
        w.bao
            .audit_entries()
            .iter()
            .filter(|e| e["type"] == "response" && e["request"]["path"] == path)
            .filter(|e| e["error"].as_str().is_none_or(str::is_empty))
            .filter(|e| e["time"].as_str().is_some_and(|t| t.get(..19).is_some_and(|t| t >= since.as_str())))
            .count()
    };
    let connected = |log: &str| log.lines().filter(|l| l.starts_with("connected as ")).count();
    let app_log = || {
        let out = c.api.kubectl(&["-n", "shop", "logs", pod, "-c", "app"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let restarts_before: u64 =
        c.get_json(&["-n", "shop", "get", "pod", pod])["status"]["containerStatuses"][0]["restartCount"]
            .as_u64()
            .unwrap();

    let rebooted = Instant::now();
    let node_back = c.reboot();
    w.bao.unseal_all(c);
    let unsealed = rebooted.elapsed();
    // The app answers again: its container restarted and connected.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let p = c.get_json(&["-n", "shop", "get", "pod", pod]);
        let restarted = p["status"]["containerStatuses"][0]["restartCount"].as_u64().unwrap_or(0) > restarts_before;
        if restarted && connected(&app_log()) > 0 && p["status"]["containerStatuses"][0]["ready"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "the app did not answer within 180 s of the reboot: {}", p["status"]);
        std::thread::sleep(Duration::from_millis(500));
    }
    let answering = rebooted.elapsed();
    for p in &agents {
        c.wait_ready("shop", p, Duration::from_secs(120));
    }
    let every_pod = rebooted.elapsed();
    let agent_log = c.api.kubectl_ok(&["-n", "shop", "logs", pod, "-c", "sidekey-agent"]);
    assert!(!agent_log.contains("adopted the lease"), "the state volume survived the reboot: {agent_log}");
    let (logins, issued) = (count("auth/kubernetes/login"), count("database/creds/orders"));
    let failed = app_log().lines().filter(|l| l.contains("failed")).count();
    eprintln!(
        "node reboot: the node Ready {:.1}s after, OpenBao unsealed after {:.1}s; the app answered again after {:.1}s, all {} pods with an agent ready after {:.1}s; {logins} logins and {issued} database credentials since (the app's rotation included); the app logged {failed} failures before it connected",
        node_back.as_secs_f64(),
        unsealed.as_secs_f64(),
        answering.as_secs_f64(),
        agents.len(),
        every_pod.as_secs_f64()
    );
    assert!(logins >= agents.len(), "every agent logs in anew: {logins} logins for {} pods", agents.len());
}

/// Twenty pods of a Deployment start while the active OpenBao server is
/// killed: each logs in and gets its database credential through the new
/// leader, every pod becomes ready, and each agent's credential is issued
/// once (a request lost in the election would show as a second one).
fn twenty_pods_start_through_a_failover(w: &Shop) {
    const REPLICAS: usize = 20;
    let c = &w.cluster;
    let pod: Value = serde_json::from_str(&shop_pod(
        "unused",
        json!({"sidekey.dev/secret-db": "vault:database/creds/orders"}),
        json!({}),
        "exec /bin/busybox sleep 3600",
    ))
    .unwrap();
    let mut template = json!({"metadata": pod["metadata"].clone(), "spec": pod["spec"].clone()});
    let meta = template["metadata"].as_object_mut().unwrap();
    meta.remove("name");
    meta.remove("namespace");
    meta.insert("labels".into(), json!({"sidekey.dev/inject": "true", "app": "herd"}));
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "herd", "namespace": "shop"},
        "spec": {"replicas": REPLICAS, "selector": {"matchLabels": {"app": "herd"}}, "template": template}});
    let active = w.bao.active_pod().expect("the Raft cluster has an active server");
    c.apply_ok(&deployment.to_string());
    let created = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    c.kill_container("vault", &active, "openbao");
    let ready = || c.get_json(&["-n", "shop", "get", "deployment", "herd"])["status"]["readyReplicas"].as_u64();
    while ready() != Some(REPLICAS as u64) {
        assert!(
            created.elapsed() < Duration::from_secs(240),
            "not every pod became ready within 240 s: {}",
            c.api.kubectl_ok(&["-n", "shop", "get", "pods", "-l", "app=herd"])
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let all_ready = created.elapsed();
    w.bao.unseal_pod(c, &active);
    // Counted by the herd's own addresses: the example app rotates meanwhile.
    let ips =
        c.api.kubectl_ok(&["-n", "shop", "get", "pods", "-l", "app=herd", "-o", "jsonpath={.items[*].status.podIP}"]);
    let ips: Vec<&str> = ips.split_whitespace().collect();
    assert_eq!(ips.len(), REPLICAS, "{ips:?}");
    let entries = w.bao.audit_entries();
    let count = |path: &str| {
        entries
            .iter()
            .filter(|e| e["type"] == "response" && e["request"]["path"] == path)
            .filter(|e| e["error"].as_str().is_none_or(str::is_empty))
            .filter(|e| e["request"]["remote_address"].as_str().is_some_and(|a| ips.contains(&a)))
            .count()
    };
    let (logins, issued) = (count("auth/kubernetes/login"), count("database/creds/orders"));
    eprintln!(
        "herd through a failover: {REPLICAS} pods ready {:.1}s after creation ({active} killed 2 s in); {logins} logins, {issued} credentials",
        all_ready.as_secs_f64()
    );
    let agents = c.api.kubectl_ok(&["-n", "shop", "logs", "-l", "app=herd", "-c", "sidekey-agent", "--tail=-1"]);
    let lost_reads = lost_answers(&agents, "GET database/creds/orders");
    let lost_logins = lost_answers(&agents, "auth/kubernetes/login");
    eprintln!(
        "herd through a failover: the agents logged {lost_reads} credential reads and {lost_logins} login attempts the election broke off (each retried)"
    );
    let warnings: Vec<&str> = agents.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
    assert!(
        (REPLICAS..=REPLICAS + lost_reads).contains(&issued),
        "one credential per pod, and at most one more per read whose answer the election lost; the agents' warnings:\n{}",
        warnings.join("\n")
    );
    assert!((REPLICAS..=REPLICAS + lost_logins).contains(&logins), "{logins} logins: {}", warnings.join("\n"));
    c.api.kubectl_ok(&["-n", "shop", "delete", "deployment", "herd", "--wait=false"]);
}

/// Sets a flag when dropped: stops a helper thread of a scope when the
/// steps end, also by a panic (the scope waits for its threads before it
/// lets a panic through).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// What a run of pod creations got.
#[derive(Default)]
struct Created {
    sent: usize,
    injected: usize,
    not_injected: usize,
    refused: Vec<String>,
    p99: Duration,
    max: Duration,
}

/// Creates `pod` in `ns` `rate` times a second (server-side dry run:
/// admission runs in full, webhooks included, nothing is stored), open
/// loop, for at least `at_least` and until `stop` is set; sorts the
/// answers into injected, stored without the agent, and refused.
fn create_pods(c: &Cluster, ns: &str, pod: &Value, rate: u32, at_least: Duration, stop: &AtomicBool) -> Created {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ca = reqwest::Certificate::from_pem(c.api.ca_pem.as_bytes()).unwrap();
    let client = reqwest::Client::builder().tls_certs_only([ca]).timeout(Duration::from_secs(30)).build().unwrap();
    let url = format!("{}/api/v1/namespaces/{ns}/pods?dryRun=All", c.api.url);
    let body = serde_json::to_vec(pod).unwrap();
    rt.block_on(async {
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for i in 0u32.. {
            let due = start + Duration::from_secs_f64(f64::from(i) / f64::from(rate));
            if due.duration_since(start) >= at_least && stop.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep_until(due).await;
            let (client, url, body, token) = (client.clone(), url.clone(), body.clone(), c.api.admin_token.clone());
            tasks.push(tokio::spawn(async move {
                let answer = client
                    .post(&url)
                    .bearer_auth(token)
                    .header("Content-Type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let outcome = match answer {
                    Ok(r) if r.status().is_success() => {
                        let stored: Value = r.json().await.unwrap_or_default();
                        Ok(stored["spec"]["initContainers"]
                            .as_array()
                            .is_some_and(|l| l.iter().any(|c| c["name"] == "sidekey-agent")))
                    }
                    Ok(r) => Err(format!("HTTP {}: {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => Err(e.to_string()),
                };
                (due.elapsed(), outcome)
            }));
        }
        let mut created = Created { sent: tasks.len(), ..Created::default() };
        let mut latencies = Vec::new();
        for t in tasks {
            let (latency, outcome) = t.await.unwrap();
            latencies.push(latency);
            match outcome {
                Ok(true) => created.injected += 1,
                Ok(false) => created.not_injected += 1,
                Err(e) => created.refused.push(e),
            }
        }
        latencies.sort();
        created.p99 = latencies.get(latencies.len().saturating_sub(1) * 99 / 100).copied().unwrap_or_default();
        created.max = latencies.last().copied().unwrap_or_default();
        created
    })
}

/// A pod of the shop that opts in, named by the server (`generateName`).
fn generated_shop_pod() -> Value {
    let mut pod: Value = serde_json::from_str(&shop_pod(
        "unused",
        json!({"sidekey.dev/secret-db": "vault:database/creds/orders"}),
        json!({}),
        "exec /bin/busybox sleep 3600",
    ))
    .unwrap();
    let meta = pod["metadata"].as_object_mut().unwrap();
    meta.remove("name");
    meta.insert("generateName".into(), json!("load-"));
    pod
}

/// The injector upgraded (`helm upgrade` to a new image digest: a rolling
/// update of its two replicas) while a client creates 20 opted-in pods a
/// second: every creation is answered and injected. Then every replica
/// down: creations in an opted-in namespace are refused with the API
/// server's message naming the webhook, pods in `kube-system` and in the
/// injector's own namespace are created as before (the webhook is never
/// called there), and creations succeed again soon after the replicas
/// return.
fn the_injector_upgraded_under_load_then_all_replicas_down(w: &Shop, s: &Supply) {
    const RATE: u32 = 20;
    let c = &w.cluster;
    let new_digest = s.registry.push_modified(&image("sidekey-injector"), &format!("{}:upgrade", s.injector.repo));
    assert_ne!(new_digest, s.injector.digest);
    let pod = generated_shop_pod();
    let chart = repo_root().join("deploy/helm/sidekey").display().to_string();
    let stop = AtomicBool::new(false);
    let (created, upgrade) = std::thread::scope(|sc| {
        let guard = StopOnDrop(&stop);
        let load = sc.spawn(|| create_pods(c, "shop", &pod, RATE, Duration::from_secs(60), &stop));
        std::thread::sleep(Duration::from_secs(5));
        let begun = Instant::now();
        let digest = format!("injector.image.digest={new_digest}");
        w.helm(&["upgrade", "sidekey", &chart, "-n", "sidekey", "--reuse-values", "--set", &digest, "--wait"]);
        // Until the replaced replicas have left (their 5 s preStop, then
        // SIGTERM), with the load still on.
        let pods = || {
            c.api.kubectl_ok(&[
                "-n",
                "sidekey",
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/name=sidekey-injector",
                "-o",
                "name",
            ])
        };
        while pods().lines().count() > 2 {
            assert!(begun.elapsed() < Duration::from_secs(180), "old replicas still there: {}", pods());
            std::thread::sleep(Duration::from_millis(500));
        }
        let upgrade = begun.elapsed();
        std::thread::sleep(Duration::from_secs(5));
        drop(guard);
        (load.join().unwrap(), upgrade)
    });
    let injectors = c.get_json(&["-n", "sidekey", "get", "pods", "-l", "app.kubernetes.io/name=sidekey-injector"]);
    let ids: Vec<String> = injectors["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["status"]["containerStatuses"][0]["imageID"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids, vec![format!("{}@{new_digest}", s.injector.repository); 2], "both replicas run the new digest");
    eprintln!(
        "injector upgrade: {} dry-run creations at {RATE}/s over the upgrade ({:.1}s from helm upgrade to the old replicas gone): {} injected, {} not injected, {} refused; p99 {:.0} ms, max {:.0} ms",
        created.sent,
        upgrade.as_secs_f64(),
        created.injected,
        created.not_injected,
        created.refused.len(),
        created.p99.as_secs_f64() * 1000.0,
        created.max.as_secs_f64() * 1000.0
    );
    assert!(
        created.refused.is_empty(),
        "creations refused during the upgrade: {:?}",
        &created.refused[..created.refused.len().min(3)]
    );
    assert_eq!(created.not_injected, 0, "pods created without the agent during the upgrade");
    assert!(created.sent >= 60 * RATE as usize, "{}", created.sent);

    // Every replica down.
    let dry_run = |ns: &str, pod: &Value| {
        let t = Instant::now();
        let out =
            c.api.kubectl_stdin(&["-n", ns, "create", "--dry-run=server", "-o", "json", "-f", "-"], &pod.to_string());
        let took = t.elapsed();
        if out.status.success() {
            let stored: Value = serde_json::from_slice(&out.stdout).unwrap();
            let injected = stored["spec"]["initContainers"]
                .as_array()
                .is_some_and(|l| l.iter().any(|c| c["name"] == "sidekey-agent"));
            (Ok(injected), took)
        } else {
            (Err(String::from_utf8_lossy(&out.stderr).into_owned()), took)
        }
    };
    c.api.kubectl_ok(&["-n", "sidekey", "scale", "deployment", "sidekey-injector", "--replicas=0"]);
    let gone = Instant::now();
    while !c
        .api
        .kubectl_ok(&["-n", "sidekey", "get", "pods", "-l", "app.kubernetes.io/name=sidekey-injector", "-o", "name"])
        .trim()
        .is_empty()
    {
        assert!(gone.elapsed() < Duration::from_secs(60), "the injector replicas did not stop");
        std::thread::sleep(Duration::from_millis(250));
    }
    let (refused, took) = dry_run("shop", &pod);
    let message = refused.expect_err("a creation in an opted-in namespace with no injector must be refused");
    assert!(message.contains("failed calling webhook") && message.contains("inject.sidekey.dev"), "{message}");
    let mut elsewhere = pod.clone();
    elsewhere["spec"]["serviceAccountName"] = json!("default");
    for ns in ["kube-system", "sidekey"] {
        elsewhere["metadata"]["namespace"] = json!(ns);
        let (created, _) = dry_run(ns, &elsewhere);
        assert_eq!(created, Ok(false), "a pod in {ns} with no injector running");
    }
    c.api.kubectl_ok(&["-n", "sidekey", "scale", "deployment", "sidekey-injector", "--replicas=2"]);
    let back = Instant::now();
    loop {
        if dry_run("shop", &pod).0 == Ok(true) {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(120), "creations still refused 120 s after the replicas returned");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "injector down: refused in {:.0} ms with: {}; kube-system and sidekey unaffected; injecting again {:.1}s after scaling back to 2",
        took.as_secs_f64() * 1000.0,
        message.trim(),
        back.elapsed().as_secs_f64()
    );
    c.api.kubectl_ok(&["-n", "sidekey", "rollout", "status", "deployment/sidekey-injector", "--timeout=120s"]);
}

/// A real Prometheus on the node finds the injector's replicas through
/// their Service and the example app's agent through its pod (as the
/// chart's ServiceMonitor and PodMonitor select them), scrapes them and has
/// the chart's alert rules loaded.
fn prometheus_scrapes_the_injector_and_the_agents(prom: &Prometheus, pod: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let injectors = prom.targets_up("sidekey-injector").len();
        let agent = prom.targets_up("sidekey-agents").iter().any(|t| t["labels"]["pod"] == pod);
        let ready = prom.query(&format!("sidekey_agent_ready{{namespace=\"shop\",pod=\"{pod}\"}} == 1")).len();
        if injectors == 2 && agent && ready == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus: {injectors} injector targets up, agent of {pod} up: {agent}, ready: {ready}\n{}\n{}",
            prom.api("targets"),
            prom.log()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let groups: Vec<Value> = prom.api("rules")["groups"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = groups.iter().filter_map(|g| g["name"].as_str()).collect();
    assert_eq!(names, ["sidekey-agent", "sidekey-injector"], "the chart's rules are loaded");
}

/// The alerts Prometheus has pending or firing now, one entry each (name,
/// state, since when, which pod and source), for the reliability table.
fn alerts_so_far(prom: &Prometheus) -> String {
    let lines: Vec<String> = prom
        .alerts()
        .iter()
        .map(|a| {
            let l = |k: &str| a["labels"][k].as_str().unwrap_or_default().to_owned();
            let since = a["activeAt"].as_str().unwrap_or_default();
            format!("{} {} since {since} ({}/{} {})", l("alertname"), a["state"], l("namespace"), l("pod"), l("source"))
        })
        .collect();
    if lines.is_empty() { "none".into() } else { lines.join("; ") }
}

/// The UTC time of day, in seconds, of an RFC 3339 time
/// (`2026-12-07T20:19:28.903994233Z`, as Prometheus writes `activeAt`).
fn seconds_of_day(rfc3339: &str) -> f64 {
    let time = rfc3339.split('T').nth(1).unwrap_or_default().trim_end_matches('Z');
    let mut parts = time.split(':').map(|p| p.parse::<f64>().unwrap_or(f64::NAN));
    let (h, m, s) =
        (parts.next().unwrap_or(f64::NAN), parts.next().unwrap_or(f64::NAN), parts.next().unwrap_or(f64::NAN));
    h * 3600.0 + m * 60.0 + s
}

/// The UTC time of day, in seconds, of `t`.
fn seconds_of_day_now(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(f64::NAN, |d| d.as_secs_f64().rem_euclid(86_400.0))
}

/// How many of an agent's requests (`what`: `GET database/creds/orders`)
/// failed with an answer that may have been lost after the server acted
/// (a standby's redirect, a broken connection): each may have issued a
/// credential that no one uses and that ends with its TTL.
fn lost_answers(agent_log: &str, what: &str) -> usize {
    agent_log
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains(what))
        .filter(|l| l.contains("HTTP 307") || l.contains("error sending request"))
        .count()
}

/// A pod in `shop` that opts in with the `orders` role and reads the KV
/// secret, running busybox `script` as its app (UID 10001, fsGroup 10001).
fn shop_pod(name: &str, annotations: Value, spec_extra: Value, script: &str) -> String {
    let mut ann = json!({"sidekey.dev/inject": "true", "sidekey.dev/vault-role": "orders",
        "sidekey.dev/secret-api-key": "vault:secret/data/shop/orders#api_key", "sidekey.dev/refresh": "1s"});
    ann.as_object_mut().unwrap().extend(annotations.as_object().unwrap().clone());
    let mut spec = json!({"serviceAccountName": "orders", "automountServiceAccountToken": false,
        "securityContext": {"runAsNonRoot": true, "runAsUser": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app", "image": "sidekey.test/testbox:1", "imagePullPolicy": "Never",
            "command": ["/bin/busybox", "sh", "-c", script],
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                "capabilities": {"drop": ["ALL"]}},
            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "32Mi"}}}]});
    spec.as_object_mut().unwrap().extend(spec_extra.as_object().unwrap().clone());
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"sidekey.dev/inject": "true"}, "annotations": ann},
        "spec": spec})
    .to_string()
}

/// Waits until the log of `container` in `shop/pod` contains `text`.
fn wait_log(c: &Cluster, pod: &str, container: &str, text: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let out = c.api.kubectl(&["-n", "shop", "logs", pod, "-c", container]);
        let log = String::from_utf8_lossy(&out.stdout).into_owned();
        if log.contains(text) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "{pod}/{container} did not log {text:?} in {timeout:?}: {log}\nagent: {}",
            String::from_utf8_lossy(&c.api.kubectl(&["-n", "shop", "logs", pod, "-c", "sidekey-agent"]).stdout)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// `on-change: signal:SIGHUP` with `shareProcessNamespace` reaches the app
/// process and no other container's, and an `http://127.0.0.1:PORT/PATH`
/// on-change reaches an app
/// that listens there, each after a KV update.
fn on_change_reaches_the_app_by_signal_and_by_http(w: &Shop) {
    let c = &w.cluster;
    // Two containers share the process namespace; only `app` is selected,
    // so only its processes may be signalled.
    let trap = "trap 'echo got-SIGHUP' HUP; echo started; while true; do /bin/busybox sleep 1 & wait $!; done";
    let mut on_signal: Value = serde_json::from_str(&shop_pod(
        "on-signal",
        json!({"sidekey.dev/on-change": "signal:SIGHUP", "sidekey.dev/containers": "app"}),
        json!({"shareProcessNamespace": true}),
        trap,
    ))
    .unwrap();
    let mut other = on_signal["spec"]["containers"][0].clone();
    other["name"] = json!("other");
    on_signal["spec"]["containers"].as_array_mut().unwrap().push(other);
    c.apply_ok(&on_signal.to_string());
    c.apply_ok(&shop_pod(
        "on-http",
        json!({"sidekey.dev/on-change": "http://127.0.0.1:9000/reload"}),
        json!({}),
        "echo started; while true; do printf 'HTTP/1.1 200 OK\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n' | /bin/busybox nc -l -p 9000; done",
    ));
    c.wait_ready("shop", "on-signal", Duration::from_secs(60));
    c.wait_ready("shop", "on-http", Duration::from_secs(60));
    wait_log(c, "on-signal", "app", "started", Duration::from_secs(10));
    wait_log(c, "on-http", "app", "started", Duration::from_secs(10));
    w.bao.kv_put("shop/orders", json!({"api_key": format!("{}-v3", w.api_key)}));
    wait_log(c, "on-signal", "app", "got-SIGHUP", Duration::from_secs(10));
    wait_log(c, "on-signal", "other", "started", Duration::from_secs(1));
    std::thread::sleep(Duration::from_secs(1));
    let other_log = c.api.kubectl_ok(&["-n", "shop", "logs", "on-signal", "-c", "other"]);
    assert!(!other_log.contains("got-SIGHUP"), "a container that was not selected got the signal");
    let log = wait_log(c, "on-http", "app", "POST /reload", Duration::from_secs(10));
    assert!(log.contains("POST /reload HTTP/1.1"), "{log}");
    c.api.kubectl_ok(&["-n", "shop", "delete", "pod", "on-signal", "on-http", "--wait=false"]);
}

/// `env: exec`: the variable exists only in the app's process, started by
/// `sidekey-agent exec` that `sidekey-install` copied into the pod; the
/// stored spec holds the reference, never the value.
fn exec_mode_puts_the_value_only_in_the_process(w: &Shop) {
    let c = &w.cluster;
    let pod = shop_pod(
        "exec-mode",
        json!({"sidekey.dev/env": "exec"}),
        json!({}),
        "echo \"sha=$(printf %s \"$API_KEY\" | /bin/busybox sha256sum | cut -d' ' -f1)\"; /bin/busybox sleep 3600",
    );
    let mut pod: Value = serde_json::from_str(&pod).unwrap();
    pod["spec"]["containers"][0]["env"] =
        json!([{"name": "API_KEY", "value": "vault:secret/data/shop/orders#api_key"}]);
    c.apply_ok(&pod.to_string());
    c.wait_ready("shop", "exec-mode", Duration::from_secs(60));
    let current = w.bao.kv_get("shop/orders")["api_key"].as_str().unwrap().to_owned();
    wait_log(c, "exec-mode", "app", &format!("sha={}", sha256_hex(&current)), Duration::from_secs(10));
    let stored = c.get_json(&["-n", "shop", "get", "pod", "exec-mode"]);
    let text = stored.to_string();
    assert!(!text.contains(&current), "the value is not in the spec");
    let app = &stored["spec"]["containers"][0];
    assert_eq!(app["command"][0], "/sidekey/bin/sidekey-agent");
    assert!(!app["env"].as_array().into_iter().flatten().any(|e| e["name"] == "API_KEY"));
    let inits: Vec<&str> =
        stored["spec"]["initContainers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert!(inits.contains(&"sidekey-install"), "{inits:?}");
    c.api.kubectl_ok(&["-n", "shop", "delete", "pod", "exec-mode", "--wait=false"]);
}

/// `lifecycle: init-only` in a Job: the agent renders once as a plain init
/// container, the job's container reads the file and exits, the pod
/// Succeeds (nothing keeps it alive).
fn an_init_only_job_completes(w: &Shop) {
    let c = &w.cluster;
    let pod: Value = serde_json::from_str(&shop_pod(
        "unused",
        json!({"sidekey.dev/lifecycle": "init-only"}),
        json!({"restartPolicy": "Never"}),
        "echo \"sha=$(/bin/busybox sha256sum < /run/secrets/sidekey/api-key | cut -d' ' -f1)\"",
    ))
    .unwrap();
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "report", "namespace": "shop"},
        "spec": {"backoffLimit": 0, "template": {"metadata": pod["metadata"].clone(), "spec": pod["spec"].clone()}}});
    let mut job = job;
    job["spec"]["template"]["metadata"].as_object_mut().unwrap().remove("name");
    job["spec"]["template"]["metadata"].as_object_mut().unwrap().remove("namespace");
    c.apply_ok(&job.to_string());
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let j = c.get_json(&["-n", "shop", "get", "job", "report"]);
        if j["status"]["succeeded"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline && j["status"]["failed"].is_null(),
            "the init-only job did not complete: {j}\n{}",
            c.api.kubectl_ok(&["-n", "shop", "get", "pods,events"])
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let pods = c.get_json(&["-n", "shop", "get", "pods", "-l", "job-name=report"]);
    let p = &pods["items"][0];
    assert_eq!(p["status"]["phase"], "Succeeded");
    assert_eq!(p["spec"]["initContainers"][0]["name"], "sidekey-agent");
    assert!(p["spec"]["initContainers"][0]["restartPolicy"].is_null(), "a plain init container");
    let name = p["metadata"]["name"].as_str().unwrap();
    let current = w.bao.kv_get("shop/orders")["api_key"].as_str().unwrap().to_owned();
    let log = c.api.kubectl_ok(&["-n", "shop", "logs", name, "-c", "app"]);
    assert!(log.contains(&format!("sha={}", sha256_hex(&current))), "{log}");
}

/// `lifecycle: legacy` (clusters before native sidecars): `sidekey-init`
/// renders before the app, `sidekey-agent` runs beside it and keeps the
/// file current.
fn the_legacy_shape_renders_first_and_keeps_files_current(w: &Shop) {
    let c = &w.cluster;
    c.apply_ok(&shop_pod(
        "legacy",
        json!({"sidekey.dev/lifecycle": "legacy"}),
        json!({}),
        "echo \"first=$(/bin/busybox sha256sum < /run/secrets/sidekey/api-key | cut -d' ' -f1)\"; /bin/busybox sleep 3600",
    ));
    c.wait_ready("shop", "legacy", Duration::from_secs(60));
    let stored = c.get_json(&["-n", "shop", "get", "pod", "legacy"]);
    assert_eq!(stored["spec"]["initContainers"][0]["name"], "sidekey-init");
    assert!(stored["spec"]["containers"].as_array().unwrap().iter().any(|c| c["name"] == "sidekey-agent"));
    let current = w.bao.kv_get("shop/orders")["api_key"].as_str().unwrap().to_owned();
    wait_log(c, "legacy", "app", &format!("first={}", sha256_hex(&current)), Duration::from_secs(10));
    let next = format!("{}-legacy", w.api_key);
    w.bao.kv_put("shop/orders", json!({"api_key": next}));
    let deadline = Instant::now() + Duration::from_secs(5);
    while c.exec("shop", "legacy", "app", &["/bin/busybox", "cat", "/run/secrets/sidekey/api-key"]).stdout
        != next.as_bytes()
    {
        assert!(Instant::now() < deadline, "the legacy agent did not follow the update");
        std::thread::sleep(Duration::from_millis(200));
    }
    c.api.kubectl_ok(&["-n", "shop", "delete", "pod", "legacy", "--wait=false"]);
}

/// With `compatibility.vaultK8s` (a `helm upgrade`), a pod written for the
/// Vault Agent injector — no sidekey label or annotation — gets sidekey's
/// agent: its Go template renders at /vault/secrets (a KV v2 path without
/// `data/`, as consul-template reads it) on a read-only tmpfs before the app
/// starts, a KV update reaches the file, and the pod is marked injected for
/// vault-k8s too.
fn a_vault_k8s_pod_gets_sidekeys_agent(w: &Shop) {
    let c = &w.cluster;
    let chart = sidekey_testenv::shop::repo_root().join("deploy/helm/sidekey");
    w.helm(&[
        "upgrade",
        "sidekey",
        &chart.display().to_string(),
        "-n",
        "sidekey",
        "--reuse-values",
        "--set",
        "config.compatibility.vaultK8s=true",
        "--wait",
    ]);
    let webhook = c.get_json(&["get", "mutatingwebhookconfiguration", "sidekey-injector"]);
    // No selector (the API server stores it as {}: every object).
    let selector = &webhook["webhooks"][0]["objectSelector"];
    assert!(selector.is_null() || *selector == json!({}), "{webhook}");
    // An upgrade that changes a value rolls the injector; its serving
    // certificate survives it (the chart's Secret lists no keys for Helm
    // to set back).
    let secret = c.get_json(&["-n", "sidekey", "get", "secret", "sidekey-injector-tls"]);
    assert!(secret["data"]["tls.crt"].as_str().is_some_and(|v| !v.is_empty()), "the upgrade kept the certificate");
    let script = "echo \"first=$(/bin/busybox cat /vault/secrets/api.txt)\"; \
        if /bin/busybox touch /vault/secrets/x 2>/dev/null; then echo writable; else echo read-only; fi; /bin/busybox sleep 3600";
    let mut pod: Value = serde_json::from_str(&shop_pod("vault-k8s", json!({}), json!({}), script)).unwrap();
    pod["metadata"]["labels"] = json!({"app": "vault-k8s"});
    pod["metadata"]["annotations"] = json!({
        "vault.hashicorp.com/agent-inject": "true",
        "vault.hashicorp.com/role": "orders",
        "vault.hashicorp.com/agent-inject-secret-api.txt": "secret/shop/orders",
        "vault.hashicorp.com/agent-inject-template-api.txt":
            "{{- with secret \"secret/shop/orders\" -}}api_key={{ .Data.data.api_key }}{{- end }}",
        "vault.hashicorp.com/template-static-secret-render-interval": "1s",
        "vault.hashicorp.com/agent-cache-enable": "true",
    });
    // Replaced replicas serve (with the old configuration) for a few
    // seconds more: wait until the webhook's answer is the new one, seen
    // through a server-side dry run, which goes through admission.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = c.api.kubectl_stdin(&["create", "--dry-run=server", "-o", "json", "-f", "-"], &pod.to_string());
        let dry: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if dry["metadata"]["annotations"]["sidekey.dev/status"] == "injected" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the webhook never answered with compatibility on: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    c.apply_ok(&pod.to_string());
    c.wait_ready("shop", "vault-k8s", Duration::from_secs(60));
    let stored = c.get_json(&["-n", "shop", "get", "pod", "vault-k8s"]);
    let a = &stored["metadata"]["annotations"];
    assert_eq!(a["vault.hashicorp.com/agent-inject-status"], "injected");
    assert_eq!(a["sidekey.dev/status"], "injected");
    assert_eq!(stored["spec"]["initContainers"][0]["name"], "sidekey-agent");
    assert_eq!(stored["spec"]["initContainers"][0]["restartPolicy"], "Always");
    let current = w.bao.kv_get("shop/orders")["api_key"].as_str().unwrap().to_owned();
    let log = wait_log(c, "vault-k8s", "app", &format!("first=api_key={current}"), Duration::from_secs(10));
    assert!(log.contains("read-only") && !log.contains("writable"), "{log}");
    let next = format!("{}-vault-k8s", w.api_key);
    w.bao.kv_put("shop/orders", json!({"api_key": next}));
    let want = format!("api_key={next}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.exec("shop", "vault-k8s", "app", &["/bin/busybox", "cat", "/vault/secrets/api.txt"]).stdout
        != want.as_bytes()
    {
        assert!(Instant::now() < deadline, "the KV update did not reach /vault/secrets/api.txt");
        std::thread::sleep(Duration::from_millis(200));
    }
    c.api.kubectl_ok(&["-n", "shop", "delete", "pod", "vault-k8s", "--wait=false"]);
}

/// The restart count of the agent of `pod` (JSON).
fn agent_restarts(pod: &Value) -> u64 {
    pod["status"]["initContainerStatuses"].as_array().unwrap().iter().find(|s| s["name"] == "sidekey-agent").unwrap()
        ["restartCount"]
        .as_u64()
        .unwrap()
}

/// The restart count of every container of `pod` (JSON), init containers
/// first.
fn restart_counts(pod: &Value) -> Vec<u64> {
    ["initContainerStatuses", "containerStatuses"]
        .iter()
        .flat_map(|k| pod["status"][k].as_array().cloned().unwrap_or_default())
        .map(|s| s["restartCount"].as_u64().unwrap_or(0))
        .collect()
}

/// Where the kubelet mounted the secrets volume of the pod with `uid`, in
/// the node's mount namespace.
fn secrets_on_node(c: &Cluster, uid: &str) -> std::path::PathBuf {
    c.node().dir().join(format!("kubelet/pods/{uid}/volumes/kubernetes.io~empty-dir/sidekey-secrets"))
}

/// A file as the node sees it (read there: `kubectl exec` needs the
/// kubelet); empty when it cannot be read.
fn read_on_node(c: &Cluster, path: &std::path::Path) -> Vec<u8> {
    c.node().command(std::path::Path::new("/bin/cat")).arg(path).output().map(|o| o.stdout).unwrap_or_default()
}

/// The value of env var `name` of the first container of `pod` (JSON).
fn app_env(pod: &Value, name: &str) -> String {
    let env = pod["spec"]["containers"][0]["env"].as_array().unwrap();
    env.iter().find(|e| e["name"] == name).unwrap()["value"].as_str().unwrap().to_owned()
}

/// Runs one step, saying what it proves and how long it took.
fn step<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    eprintln!("step: {name}");
    let out = f();
    eprintln!("step: {name}: ok in {:.1}s", t.elapsed().as_secs_f64());
    out
}

#[test]
fn the_product_in_real_pods_on_a_real_node() {
    let cluster = Cluster::start(&test_images());
    step("a pod runs and reaches Services by name", || a_pod_runs_and_reaches_services_by_name(&cluster));
    let supply =
        step("the images are pushed, signed and attested", || the_images_are_pushed_signed_and_attested(&cluster));
    let w = step("OpenBao in the cluster behind TLS, PostgreSQL on the node", || Shop::on(cluster));
    step("helm installs the injector from the registry, by digest", || helm_installs_the_injector(&w, &supply));
    let prom = step("Prometheus runs on the node with the chart's alert rules", || Prometheus::start_in(&w.cluster));
    step("a tampered image under the same tag does not verify", || {
        a_tampered_image_under_the_same_tag_does_not_verify(&supply)
    });
    step("the webhook refuses bad pods and leaves others alone", || {
        the_webhook_refuses_bad_pods_and_leaves_others_alone(&w)
    });
    let pod =
        step("the example app runs with its secrets in files", || the_example_app_runs_with_its_secrets_in_files(&w));
    step("the pods run the signed digests", || the_pods_run_the_signed_digests(&w, &supply, &pod));
    step("Prometheus scrapes the injector and the agents", || {
        prometheus_scrapes_the_injector_and_the_agents(&prom, &pod)
    });
    // The rotation check below counts from here; the other steps run meanwhile.
    let app_started = Instant::now();
    step("a KV update reaches the app container within refresh", || {
        a_kv_update_reaches_the_app_container_within_refresh(&w, &pod)
    });
    step("a killed agent is restarted without new credentials", || {
        a_killed_agent_is_restarted_without_new_credentials(&w, &pod)
    });
    step("the active OpenBao killed costs the app nothing", || {
        the_active_openbao_killed_costs_the_app_nothing(&w, &prom, &pod)
    });
    eprintln!("alerts after the failover: {}", alerts_so_far(&prom));
    step("on-change reaches the app by signal and by HTTP", || on_change_reaches_the_app_by_signal_and_by_http(&w));
    step("exec mode puts the value only in the process", || exec_mode_puts_the_value_only_in_the_process(&w));
    step("an init-only Job completes", || an_init_only_job_completes(&w));
    step("the legacy shape renders first and keeps files current", || {
        the_legacy_shape_renders_first_and_keeps_files_current(&w)
    });
    step("a pod annotated for vault-k8s gets sidekey's agent", || a_vault_k8s_pod_gets_sidekeys_agent(&w));
    step("the app follows rotating credentials for a minute", || {
        the_app_follows_rotating_credentials_for_a_minute(&w, &pod, app_started)
    });
    // After the rotation count: its pod's app sees the cut.
    step("OpenBao cut off from the app's pod for longer than a lease", || {
        openbao_cut_off_longer_than_a_lease(&w, &prom, &pod)
    });
    step("the kubelet and containerd restarted cost the pod nothing", || {
        kubelet_and_containerd_restarts_cost_the_pod_nothing(&w, &pod)
    });
    step("kube-apiserver down for a minute", || the_apiserver_down_for_a_minute(&w, &pod));
    step("agents at their limits serve or fail loudly", || agents_at_their_limits_serve_or_fail_loudly(&w));
    step("a rebooted node brings every pod back", || a_rebooted_node_brings_every_pod_back(&w, &pod));
    // After the rotation count: these pods read database credentials too.
    step("twenty pods start through a failover", || twenty_pods_start_through_a_failover(&w));
    eprintln!("alerts after the herd's failover: {}", alerts_so_far(&prom));
    step("the injector upgraded under load, then all its replicas down", || {
        the_injector_upgraded_under_load_then_all_replicas_down(&w, &supply)
    });
}
