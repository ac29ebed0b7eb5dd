//! The agent against a real OpenBao (and PostgreSQL, and kube-apiserver for
//! Kubernetes auth). Every test also scans the agent's whole log for every
//! secret value it used.

#![allow(clippy::unwrap_used, clippy::disallowed_methods, missing_docs)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sidekey_testenv::{KubeApi, OpenBao, Postgres, TcpProxy, wait_until};
use support::{AgentProc, POLICY, config, read_consistent, token_file};

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand::u64(..))
}

#[test]
fn kv_v2_updates_arrive_within_refresh_and_unchanged_secrets_are_not_read_again() {
    let bao = OpenBao::start();
    let (pw1, pw2, api) = (unique("pw1"), unique("pw2"), unique("api"));
    bao.kv_put("app/db", json!({"password": pw1, "user": "app"}));
    bao.kv_put("app/static", json!({"api_key": api}));
    let tmp = tempfile::tempdir().unwrap();
    let token = token_file(&bao, tmp.path(), "1h");
    let files = json!([
        {"name": "db-password", "ref": "vault:secret/data/app/db#password", "mode": "0440"},
        {"name": "static", "ref": "vault:secret/data/app/static", "mode": "0400"},
    ]);
    let mut agent = AgentProc::spawn(config(&bao.addr, &token, files, "2s"), &[]);
    agent.wait_for("static", Duration::from_secs(20));
    assert_eq!(agent.read("db-password"), pw1);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&agent.read("static")).unwrap(), json!({"api_key": api}));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(agent.mount.join("static")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o400);

    // Several refreshes with nothing changed (the first check comes half a
    // period to one and a half after the start): version checks only.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(bao.count_reads("secret/data/app/static"), 1, "unchanged secret read again");
    assert!(bao.count_reads("secret/metadata/app/static") >= 2, "no version checks");

    let took = {
        bao.kv_put("app/db", json!({"password": pw2, "user": "app"}));
        agent.wait_for_content("db-password", &pw2, Duration::from_secs(3))
    };
    assert!(took <= Duration::from_secs(3), "new version took {took:?} (refresh 2s + 1s)");
    assert_eq!(bao.count_reads("secret/data/app/db"), 2);
    assert_eq!(bao.count_reads("secret/data/app/static"), 1);
    assert!(agent.metric("sidekey_agent_renders_total") >= 2.0);
    agent.assert_log_has_no(&[&pw1, &pw2, &api]);
}

#[test]
fn rotates_dynamic_postgres_credentials_with_no_failed_connection() {
    let pg = Postgres::start();
    let bao = OpenBao::start();
    bao.enable_postgres(&pg, "app", 10, 30);
    let tmp = tempfile::tempdir().unwrap();
    let token = token_file(&bao, tmp.path(), "1h");
    let files = json!([
        {"name": "username", "ref": "vault:database/creds/app#username", "mode": "0440"},
        {"name": "password", "ref": "vault:database/creds/app#password", "mode": "0440"},
    ]);
    let mut agent = AgentProc::spawn(config(&bao.addr, &token, files, "5m"), &[]);
    agent.wait_for("password", Duration::from_secs(20));

    // The app: re-reads the files when they change, connects every 200 ms.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut users = BTreeSet::new();
    let mut passwords = Vec::new();
    let (mut attempts, mut failures) = (0, Vec::new());
    let mut current: Option<(String, String)> = None;
    let mut version = std::path::PathBuf::new();
    while Instant::now() < deadline {
        let v = std::fs::read_link(agent.mount.join("..data")).unwrap_or_default();
        if v != version || current.is_none() {
            if let Some(c) = read_consistent(&agent.mount, &["username", "password"]) {
                current = Some((c[0].clone(), c[1].clone()));
                version = v;
            }
        }
        let (user, password) = current.clone().unwrap();
        users.insert(user.clone());
        if !passwords.contains(&password) {
            passwords.push(password.clone());
        }
        attempts += 1;
        if let Err(e) = pg.psql(&user, &password, "select 1") {
            failures.push(format!(
                "{:?} into the run as {user}: {e}",
                Instant::now() - (deadline - Duration::from_secs(90))
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(failures.is_empty(), "{} of {attempts} connections failed: {failures:?}\n{}", failures.len(), agent.log());
    assert!(users.len() >= 3, "credentials changed {} times in 90 s (max TTL 30 s)", users.len() - 1);
    assert!(agent.metric("sidekey_agent_lease_renewals_total{") >= 3.0);
    let pw: Vec<&str> = passwords.iter().map(String::as_str).collect();
    agent.assert_log_has_no(&pw);
}

#[test]
fn token_renewals_do_not_reissue_credentials_and_a_relogin_does_not_reread_static_secrets() {
    let kube = KubeApi::start();
    kube.create_namespace("shop", &[]);
    kube.create_service_account("shop", "orders");
    let pg = Postgres::start();
    let bao = OpenBao::start();
    bao.enable_postgres(&pg, "orders", 20, 600);
    bao.put_policy("orders", POLICY);
    bao.enable_kubernetes_auth(&kube, "orders", "shop", "orders", "sidekey", &["orders"]);
    // Tokens live 2 s and are renewed, far shorter than the 20 s leases.
    bao.api(
        "POST",
        "auth/kubernetes/role/orders",
        Some(json!({
            "bound_service_account_names": ["orders"], "bound_service_account_namespaces": ["shop"],
            "audience": "sidekey", "token_policies": ["orders"], "token_ttl": "3s", "token_max_ttl": "1h"
        })),
    )
    .unwrap();
    let secret_value = unique("kv");
    bao.kv_put("shop/static", json!({"token": secret_value}));
    let tmp = tempfile::tempdir().unwrap();
    let jwt = tmp.path().join("token");
    std::fs::write(&jwt, kube.token_request("shop", "orders", "sidekey")).unwrap();
    let cfg = json!({
        "mountPath": "/x", "refresh": "1s", "startupTimeout": "30s",
        "files": [
            {"name": "db", "ref": "vault:database/creds/orders", "mode": "0440"},
            {"name": "static", "ref": "vault:secret/data/shop/static#token", "mode": "0440"},
        ],
        "vault": {"addr": bao.addr, "auth": {"method": "kubernetes", "mount": "kubernetes", "role": "orders", "tokenPath": jwt}},
    });
    let mut agent = AgentProc::spawn(cfg, &[]);
    agent.wait_for("db", Duration::from_secs(20));
    let first = agent.read("db");
    std::thread::sleep(Duration::from_secs(15));
    let renewals = agent.metric("sidekey_agent_token_renewals_total{outcome=\"ok\"}");
    assert!(renewals >= 5.0, "only {renewals} token renewals in 15 s with a 3 s token TTL");
    assert_eq!(bao.count_reads("database/creds/orders"), 1, "a token renewal re-issued credentials");
    assert_eq!(agent.read("db"), first);

    // Revoke every token the agent got: it logs in again; the static secret
    // is not read again (its version did not change).
    bao.api("POST", "sys/leases/revoke-prefix/auth/kubernetes/login", Some(json!({}))).unwrap();
    wait_until(
        "a second login",
        Duration::from_secs(20),
        || agent.metric("sidekey_agent_logins_total{outcome=\"ok\"}") >= 2.0,
        || agent.log(),
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(bao.count_reads("secret/data/shop/static"), 1, "a re-login re-read a static secret");
    assert_eq!(agent.read("static"), secret_value);
    // Vault revoked the old token's leases with it, so the credential is
    // replaced (once) because its renewal fails, not because of the login.
    wait_until("a new credential", Duration::from_secs(30), || agent.read("db") != first, || agent.log());
    assert_eq!(bao.count_reads("database/creds/orders"), 2);
    let creds: serde_json::Value = serde_json::from_str(&agent.read("db")).unwrap();
    pg.psql(creds["username"].as_str().unwrap(), creds["password"].as_str().unwrap(), "select 1").unwrap();
    agent.assert_log_has_no(&[&secret_value, creds["password"].as_str().unwrap()]);
}

/// A temporary directory with a token file (1 h) and an empty state directory.
fn with_state_dir(bao: &OpenBao) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let token = token_file(bao, tmp.path(), "1h");
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    (tmp, token, state)
}

#[test]
fn a_token_planted_in_the_state_file_is_not_adopted() {
    let bao = OpenBao::start();
    let api = unique("api");
    bao.kv_put("app/static", json!({"api_key": api}));
    let (_dir, token, state) = with_state_dir(&bao);
    // Another token, of more power, left where the agent keeps its own.
    let planted = bao.token.clone();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let disk = json!({"vaultAddr": bao.addr, "token": {"token": planted, "ttlS": 3600, "renewable": true, "at": now}, "leases": {}});
    let file = state.join("state.json");
    std::fs::write(&file, disk.to_string()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let files = json!([{"name": "api-key", "ref": "vault:secret/data/app/static#api_key", "mode": "0400"}]);
    let mut cfg = config(&bao.addr, &token, files, "5s");
    cfg["stateDir"] = json!(state);
    let mut agent = AgentProc::spawn(cfg, &[]);
    agent.wait_for("api-key", Duration::from_secs(20));
    assert_eq!(agent.read("api-key"), api);
    assert!(agent.log().contains("the adopted token is not the one in the token file"), "{}", agent.log());
    let kept = std::fs::read_to_string(&file).unwrap();
    let own = std::fs::read_to_string(&token).unwrap();
    assert!(
        !kept.contains(&planted) && kept.contains(own.trim()),
        "the agent keeps its own token, not the planted one"
    );
    agent.assert_log_has_no(&[&planted, &api]);
}

#[test]
fn a_killed_agent_adopts_its_token_and_lease_instead_of_issuing_new_credentials() {
    let pg = Postgres::start();
    let bao = OpenBao::start();
    bao.enable_postgres(&pg, "app", 10, 120);
    let api = unique("api");
    bao.kv_put("app/static", json!({"api_key": api}));
    let (_dir, token, state) = with_state_dir(&bao);
    let files = json!([
        {"name": "db-user", "ref": "vault:database/creds/app#username", "mode": "0400"},
        {"name": "db-password", "ref": "vault:database/creds/app#password", "mode": "0400"},
        {"name": "api-key", "ref": "vault:secret/data/app/static#api_key", "mode": "0400"},
    ]);
    let mut cfg = config(&bao.addr, &token, files, "5s");
    cfg["stateDir"] = json!(state);
    let mut agent = AgentProc::spawn(cfg, &[]);
    agent.wait_for("api-key", Duration::from_secs(20));
    let (user, password) = (agent.read("db-user"), agent.read("db-password"));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.join("state.json")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the state holds the token: owner only");
    let issued = || bao.count_requests(|p| p == "database/creds/app");
    let lookups = || bao.count_requests(|p| p == "auth/token/lookup-self");
    let renewals = || bao.count_requests(|p| p == "sys/leases/renew");
    assert_eq!((issued(), lookups()), (1, 1));

    // Killed and started again (twice): the same credential stays on disk
    // and keeps working; no new login, no new database user.
    for _ in 0..2 {
        agent.kill_and_restart();
        wait_until(
            "the restarted agent to adopt its state",
            Duration::from_secs(10),
            || agent.log().matches("adopted the lease of the previous run").count() >= 1,
            || agent.log(),
        );
        std::thread::sleep(Duration::from_millis(500));
        let same = agent.read("db-user") == user && agent.read("db-password") == password;
        assert!(same, "the restarted agent wrote another credential: {}", agent.log());
    }
    assert_eq!(agent.log().matches("adopted the Vault token of the previous run").count(), 2, "{}", agent.log());
    let before = renewals();
    // The adopted lease (TTL 10 s) is renewed on, by the adopted token.
    wait_until("a renewal of the adopted lease", Duration::from_secs(15), || renewals() > before, || agent.log());
    pg.psql(&user, &password, "select 1").unwrap();
    assert_eq!(issued(), 1, "a restart issued a new database credential");
    assert_eq!(lookups(), 1, "a restart logged in again");
    assert_eq!(bao.count_reads("secret/data/app/static"), 3, "static secrets are simply read again");
    agent.assert_log_has_no(&[&password, &api]);
    let state_text = std::fs::read_to_string(state.join("state.json")).unwrap();
    assert!(state_text.contains(&password) && !state_text.contains(&api), "leased data kept, static data not");
}

/// A 308 (a moved server: configuration to fix) fails the run; a 307 (an
/// OpenBao standby that cannot forward during a leader change) is asked
/// again at `vault.addr`. Neither is ever followed.
#[test]
fn never_follows_a_redirect_so_the_token_stays_with_vault() {
    use std::io::{Read, Write};
    for (status, said) in [(308, "point vault.addr at the address that answers"), (307, "trying vault.addr again")] {
        // Where a hostile or misconfigured server points: it must never
        // hear from the agent.
        let elsewhere = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let target = elsewhere.local_addr().unwrap();
        elsewhere.set_nonblocking(true).unwrap();
        // "Vault": every request answered with a redirect there.
        let vault = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", vault.local_addr().unwrap());
        std::thread::spawn(move || {
            for conn in vault.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let reply = format!(
                    "HTTP/1.1 {status} Redirect\r\nLocation: http://{target}/v1/auth/token/lookup-self\r\nContent-Length: 0\r\n\r\n"
                );
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        let tmp = tempfile::tempdir().unwrap();
        let token = tmp.path().join("vault-token");
        std::fs::write(&token, "hvs.must-not-travel").unwrap();
        let files = json!([{"name": "a", "ref": "vault:secret/data/app/a#k", "mode": "0400"}]);
        let mut c = config(&addr, &token, files, "5s");
        c["startupTimeout"] = json!("4s");
        let mut agent = AgentProc::spawn(c, &["--once"]);
        let status = agent.wait_exit(Duration::from_secs(20));
        assert!(!status.success());
        let log = agent.log();
        assert!(log.contains("does not follow redirects") && log.contains(said), "{log}");
        assert!(elsewhere.accept().is_err(), "the agent followed the redirect to another address");
        agent.assert_log_has_no(&["hvs.must-not-travel"]);
    }
}

#[test]
fn keeps_the_last_good_files_through_a_20s_outage_and_recovers() {
    let bao = OpenBao::start();
    let proxy = TcpProxy::start(bao.addr.trim_start_matches("http://"));
    let (v1, v2) = (unique("v1"), unique("v2"));
    bao.kv_put("app/cfg", json!({"key": v1}));
    let tmp = tempfile::tempdir().unwrap();
    let token = token_file(&bao, tmp.path(), "1h");
    let files = json!([{"name": "key", "ref": "vault:secret/data/app/cfg#key", "mode": "0440"}]);
    let mut agent = AgentProc::spawn(config(&proxy.url(), &token, files, "1s"), &[]);
    agent.wait_for("key", Duration::from_secs(20));
    proxy.down();
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        assert_eq!(agent.read("key"), v1, "the file changed or vanished during the outage");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.metric("sidekey_agent_failures_total{") >= 3.0, "failures not counted");
    proxy.up();
    bao.kv_put("app/cfg", json!({"key": v2}));
    agent.wait_for_content("key", &v2, Duration::from_secs(40));
    agent.assert_log_has_no(&[&v1, &v2]);
}

#[test]
fn a_reader_never_sees_partial_or_mixed_content_during_100_rotations() {
    let bao = OpenBao::start();
    bao.kv_put("app/pair", json!({"user": "u0", "pass": "p0"}));
    let tmp = tempfile::tempdir().unwrap();
    let token = token_file(&bao, tmp.path(), "1h");
    let files = json!([
        {"name": "user", "ref": "vault:secret/data/app/pair#user", "mode": "0440"},
        {"name": "pass", "ref": "vault:secret/data/app/pair#pass", "mode": "0440"},
        {"name": "both", "ref": "vault:secret/data/app/pair", "mode": "0440"},
    ]);
    let mut agent = AgentProc::spawn(config(&bao.addr, &token, files, "50ms"), &[]);
    agent.wait_for("both", Duration::from_secs(20));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (mount, stop) = (agent.mount.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let Some(v) = read_consistent(&mount, &["user", "pass", "both"]) else { continue };
                let both: serde_json::Value = serde_json::from_str(&v[2]).expect("partial JSON file");
                assert_eq!(v[0][1..], v[1][1..], "mixed user/pass: {} {}", v[0], v[1]);
                assert_eq!(both["user"], v[0].as_str(), "mixed files");
                assert_eq!(both["pass"], v[1].as_str(), "mixed files");
                // The stable names also always resolve to a whole file.
                let user = std::fs::read_to_string(mount.join("user")).unwrap_or_default();
                assert!(user.is_empty() || user.starts_with('u'));
                reads += 1;
            }
            reads
        })
    };
    for i in 1..=100 {
        bao.kv_put("app/pair", json!({"user": format!("u{i}"), "pass": format!("p{i}")}));
        agent.wait_for_content("user", &format!("u{i}"), Duration::from_secs(5));
    }
    stop.store(true, Ordering::SeqCst);
    let reads = reader.join().unwrap();
    assert!(reads > 100, "the reader only managed {reads} reads");
    assert!(agent.metric("sidekey_agent_renders_total") >= 100.0);
}

#[test]
fn init_only_exits_zero_after_one_render_and_nonzero_naming_a_missing_reference() {
    let bao = OpenBao::start();
    bao.kv_put("app/db", json!({"password": "once-value-123"}));
    let tmp = tempfile::tempdir().unwrap();
    let token = token_file(&bao, tmp.path(), "1h");
    let files = json!([{"name": "pw", "ref": "vault:secret/data/app/db#password", "mode": "0440"}]);
    let mut ok = AgentProc::spawn(config(&bao.addr, &token, files, "5m"), &["--once"]);
    assert!(ok.wait_exit(Duration::from_secs(20)).success(), "{}", ok.log());
    assert_eq!(ok.read("pw"), "once-value-123");
    ok.assert_log_has_no(&["once-value-123"]);

    let files = json!([{"name": "pw", "ref": "vault:secret/data/app/missing#password", "mode": "0440"}]);
    let mut bad = AgentProc::spawn(config(&bao.addr, &token, files, "5m"), &["--once"]);
    let status = bad.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(1));
    let log = bad.log();
    assert!(log.contains("secret/data/app/missing") && log.contains("not found"), "{log}");
    assert!(!bad.mount.join("pw").exists());

    let files = json!([{"name": "pw", "ref": "vault:secret/data/app/db#pasword", "mode": "0440"}]);
    let mut typo = AgentProc::spawn(config(&bao.addr, &token, files, "5m"), &["--once"]);
    assert_eq!(typo.wait_exit(Duration::from_secs(20)).code(), Some(1));
    assert!(typo.log().contains("\"pasword\" not found"), "{}", typo.log());
    typo.assert_log_has_no(&["once-value-123"]);

    // A KV v2 path without data/: the mount (looked up only now that the
    // read failed) explains it.
    let files = json!([{"name": "pw", "ref": "vault:secret/app/db#password", "mode": "0440"}]);
    let mut v1_style = AgentProc::spawn(config(&bao.addr, &token, files, "5m"), &["--once"]);
    assert_eq!(v1_style.wait_exit(Duration::from_secs(20)).code(), Some(1));
    assert!(v1_style.log().contains("KV v2 paths include data/ (vault:secret/data/app/db)"), "{}", v1_style.log());
}

#[test]
fn sigterm_exits_promptly_and_revokes_leases_when_configured() {
    let pg = Postgres::start();
    let bao = OpenBao::start();
    bao.enable_postgres(&pg, "app", 60, 600);
    let tmp = tempfile::tempdir().unwrap();
    let token = token_file(&bao, tmp.path(), "1h");
    let files = json!([{"name": "db", "ref": "vault:database/creds/app", "mode": "0440"}]);
    let mut cfg = config(&bao.addr, &token, files, "5m");
    cfg["vault"]["revokeOnShutdown"] = json!(true);
    let state = tmp.path().join("state");
    std::fs::create_dir(&state).unwrap();
    cfg["stateDir"] = json!(state);
    let mut agent = AgentProc::spawn(cfg, &[]);
    agent.wait_for("db", Duration::from_secs(20));
    assert!(state.join("state.json").exists());
    let creds: serde_json::Value = serde_json::from_str(&agent.read("db")).unwrap();
    let (user, password) =
        (creds["username"].as_str().unwrap().to_owned(), creds["password"].as_str().unwrap().to_owned());
    pg.psql(&user, &password, "select 1").unwrap();
    let (took, status) = agent.terminate();
    assert!(status.success(), "{}", agent.log());
    assert!(took < Duration::from_secs(3), "exit took {took:?}");
    assert!(pg.psql(&user, &password, "select 1").is_err(), "the lease was not revoked");
    assert!(!state.join("state.json").exists(), "revoked credentials are not left for a restart to adopt");
    agent.assert_log_has_no(&[&password]);
}

#[test]
fn notifies_the_app_over_http_after_each_change() {
    let bao = OpenBao::start();
    bao.kv_put("app/n", json!({"v": "one"}));
    let tmp = tempfile::tempdir().unwrap();
    let token = token_file(&bao, tmp.path(), "1h");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let hits = hits.clone();
        std::thread::spawn(move || {
            for s in listener.incoming() {
                use std::io::{Read, Write};
                let mut s = s.unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap_or(0);
                hits.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_owned());
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
    }
    let files = json!([{"name": "v", "ref": "vault:secret/data/app/n#v", "mode": "0440"}]);
    let mut cfg = config(&bao.addr, &token, files, "1s");
    cfg["onChange"] = json!(format!("http://127.0.0.1:{port}/-/reload"));
    let mut agent = AgentProc::spawn(cfg, &[]);
    agent.wait_for("v", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    assert!(hits.lock().unwrap().is_empty(), "notified without a change");
    bao.kv_put("app/n", json!({"v": "two"}));
    agent.wait_for_content("v", "two", Duration::from_secs(5));
    wait_until("the notification", Duration::from_secs(5), || !hits.lock().unwrap().is_empty(), || agent.log());
    assert_eq!(hits.lock().unwrap()[0], "POST /-/reload HTTP/1.1");
}

#[test]
fn kubernetes_auth_with_a_token_request_token_end_to_end() {
    let kube = KubeApi::start();
    kube.create_namespace("payments", &[]);
    kube.create_service_account("payments", "billing");
    let bao = OpenBao::start();
    bao.put_policy("billing", POLICY);
    bao.enable_kubernetes_auth(&kube, "billing", "payments", "billing", "sidekey", &["billing"]);
    let key = unique("sk");
    bao.kv_put("payments/stripe", json!({"api_key": key}));
    let tmp = tempfile::tempdir().unwrap();
    let jwt = tmp.path().join("token");
    let jwt_value = kube.token_request("payments", "billing", "sidekey");
    std::fs::write(&jwt, &jwt_value).unwrap();
    let cfg = json!({
        "mountPath": "/x", "refresh": "5m", "startupTimeout": "30s",
        "files": [{"name": "stripe-key", "ref": "vault:secret/data/payments/stripe#api_key", "mode": "0440"}],
        "vault": {"addr": bao.addr, "auth": {"method": "kubernetes", "mount": "kubernetes", "role": "billing", "tokenPath": jwt}},
    });
    let mut agent = AgentProc::spawn(cfg, &[]);
    agent.wait_for("stripe-key", Duration::from_secs(20));
    assert_eq!(agent.read("stripe-key"), key);
    agent.assert_log_has_no(&[&key, &jwt_value]);
}

/// JWT auth: OpenBao checks the projected token with the cluster's public
/// key and never calls the cluster; a token for another audience or another
/// service account is refused at login, naming the login.
#[test]
fn jwt_auth_checks_the_token_locally_and_refuses_other_audiences_and_accounts() {
    let kube = KubeApi::start();
    kube.create_namespace("payments", &[]);
    kube.create_service_account("payments", "billing");
    kube.create_service_account("payments", "intruder");
    let bao = OpenBao::start();
    bao.put_policy("billing", POLICY);
    bao.enable_jwt_auth(&kube, "billing", "payments", "billing", "sidekey", &["billing"]);
    let key = unique("sk");
    bao.kv_put("payments/stripe", json!({"api_key": key}));
    let tmp = tempfile::tempdir().unwrap();
    let run = |token: &str| {
        let jwt = tmp.path().join(format!("token-{}", fastrand::u32(..)));
        std::fs::write(&jwt, token).unwrap();
        let cfg = json!({
            "mountPath": "/x", "refresh": "5m", "startupTimeout": "5s",
            "files": [{"name": "stripe-key", "ref": "vault:secret/data/payments/stripe#api_key", "mode": "0440"}],
            "vault": {"addr": bao.addr, "auth": {"method": "jwt", "mount": "jwt", "role": "billing", "tokenPath": jwt}},
        });
        AgentProc::spawn(cfg, &["--once"])
    };
    let good = kube.token_request("payments", "billing", "sidekey");
    let mut agent = run(&good);
    assert!(agent.wait_exit(Duration::from_secs(20)).success(), "{}", agent.log());
    assert_eq!(agent.read("stripe-key"), key);
    agent.assert_log_has_no(&[&key, &good]);
    for (what, token) in [
        ("another audience", kube.token_request("payments", "billing", "vault")),
        ("another service account", kube.token_request("payments", "intruder", "sidekey")),
    ] {
        let mut agent = run(&token);
        let status = agent.wait_exit(Duration::from_secs(20));
        assert!(!status.success(), "{what}: the login was accepted");
        let log = agent.log();
        assert!(log.contains("login at auth/jwt/login"), "{what}: the error names the login: {log}");
        agent.assert_log_has_no(&[&key, &token]);
    }
}

/// OpenBao namespaces, as enterprises lay them out: the auth method lives in
/// a parent namespace (`org`), the secrets in a child (`org/team`); the
/// agent logs in in one and reads in the other, and renews its token where
/// it got it.
#[test]
fn logs_in_in_a_parent_namespace_and_reads_in_a_child() {
    let kube = KubeApi::start();
    kube.create_namespace("payments", &[]);
    kube.create_service_account("payments", "billing");
    let bao = OpenBao::start();
    bao.api("POST", "sys/namespaces/org", None).unwrap();
    bao.api_in("org", "POST", "sys/namespaces/team", None).unwrap();
    // A policy of the parent namespace names the child's paths relative to it.
    let policy = "path \"team/secret/data/app\" { capabilities = [\"read\"] }\n\
                  path \"team/secret/metadata/app\" { capabilities = [\"read\"] }\n";
    bao.api_in("org", "POST", "sys/policies/acl/team-reader", Some(json!({"policy": policy}))).unwrap();
    let subject = "system:serviceaccount:payments:billing";
    bao.enable_jwt_auth_in("org", &kube, "billing", subject, "sidekey", &["team-reader"]);
    bao.api_in("org/team", "POST", "sys/mounts/secret", Some(json!({"type": "kv", "options": {"version": "2"}})))
        .unwrap();
    let key = unique("sk");
    bao.api_in("org/team", "POST", "secret/data/app", Some(json!({"data": {"api_key": key}}))).unwrap();
    // The root namespace has no such secret: a read there would fail.
    assert!(bao.api("GET", "secret/data/app", None).is_err());
    let tmp = tempfile::tempdir().unwrap();
    let jwt = tmp.path().join("token");
    let jwt_value = kube.token_request("payments", "billing", "sidekey");
    std::fs::write(&jwt, &jwt_value).unwrap();
    let cfg = json!({
        "mountPath": "/x", "refresh": "1s", "startupTimeout": "20s",
        "files": [{"name": "api-key", "ref": "vault:secret/data/app#api_key", "mode": "0440"}],
        "vault": {"addr": bao.addr, "namespace": "org/team", "authNamespace": "org",
                  "auth": {"method": "jwt", "mount": "jwt", "role": "billing", "tokenPath": jwt}},
    });
    let mut agent = AgentProc::spawn(cfg, &[]);
    agent.wait_for("api-key", Duration::from_secs(20));
    assert_eq!(agent.read("api-key"), key);
    // Version checks go on in the child namespace: an update arrives.
    let next = unique("sk");
    bao.api_in("org/team", "POST", "secret/data/app", Some(json!({"data": {"api_key": next}}))).unwrap();
    agent.wait_for_content("api-key", &next, Duration::from_secs(10));
    agent.assert_log_has_no(&[&key, &next, &jwt_value]);
}

/// OpenBao's PKI engine with a root CA and a role `web` for `*.shop.svc`.
fn pki(bao: &OpenBao) -> String {
    bao.api("POST", "sys/mounts/pki", Some(json!({"type": "pki", "config": {"max_lease_ttl": "2h"}}))).unwrap();
    let root = bao
        .api("POST", "pki/root/generate/internal", Some(json!({"common_name": "sidekey test CA", "ttl": "2h"})))
        .unwrap();
    bao.api(
        "POST",
        "pki/roles/web",
        Some(json!({"allowed_domains": "shop.svc", "allow_subdomains": true, "allow_bare_domains": false,
                    "key_type": "any", "max_ttl": "10m", "no_store": true})),
    )
    .unwrap();
    bao.put_policy("pki-web", "path \"pki/sign/web\" { capabilities = [\"update\"] }\n");
    root["data"]["certificate"].as_str().unwrap().to_owned()
}

/// A certificate config: directory `web`, `cn=` and `renew=` as given.
fn cert_config(bao: &OpenBao, token: &std::path::Path, cn: &str, ttl: &str, renew: u8) -> serde_json::Value {
    let files = json!([{"name": "web", "ref": "vault:pki/sign/web", "mode": "0440", "dir": true,
        "cert": {"mount": "pki", "role": "web", "commonName": cn, "altNames": ["api.shop.svc"], "ttl": ttl,
                 "renewPercent": renew, "combined": true}}]);
    let mut c = config(&bao.addr, token, files, "5m");
    c["startupTimeout"] = json!("10s");
    c
}

/// The files of directory `web` as one consistent set, resolved through
/// `..data` once (as a server reloading its certificate should).
fn cert_set(mount: &std::path::Path) -> Option<(String, String, String)> {
    let data = mount.join(std::fs::read_link(mount.join("..data")).ok()?);
    let read = |f: &str| std::fs::read_to_string(data.join("web").join(f)).ok();
    Some((read("tls.crt")?, read("tls.key")?, read("ca.crt")?))
}

/// PKI certificates with the key born in the pod: issued by CSR, swapped as
/// one set, replaced after their share of the lifetime (8 times in a row
/// with a 20 s TTL), served by a TLS server that reloads on every swap while
/// a client connects every 200 ms verifying the chain — with no failed
/// handshake; the private keys appear in no request, response or log.
#[test]
fn certificates_are_issued_from_a_csr_and_replaced_before_they_expire_without_a_failed_handshake() {
    let bao = OpenBao::start();
    let ca_pem = pki(&bao);
    let tmp = tempfile::tempdir().unwrap();
    let token = bao.create_token(&["pki-web"], "1h");
    let token_path = tmp.path().join("token");
    std::fs::write(&token_path, &token).unwrap();
    let mut agent = AgentProc::spawn(cert_config(&bao, &token_path, "web.shop.svc", "20s", 50), &[]);
    agent.wait_for("web/tls.crt", Duration::from_secs(20));
    let (crt, key, ca) = cert_set(&agent.mount).unwrap();
    assert_eq!(ca.trim(), ca_pem.trim(), "ca.crt is the issuing CA");
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----") && crt.starts_with("-----BEGIN CERTIFICATE-----"));
    let combined = std::fs::read_to_string(agent.mount.join("web/tls.pem")).unwrap();
    assert!(combined.contains(key.trim()) && combined.contains(crt.trim()));

    // A TLS server that reloads its certificate on every connection, and a
    // client that verifies it against the CA every 200 ms.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mount = agent.mount.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let server_stop = stop.clone();
    let server = std::thread::spawn(move || {
        use rustls::pki_types::pem::PemObject;
        listener.set_nonblocking(true).unwrap();
        while !server_stop.load(Ordering::Relaxed) {
            let Ok((mut tcp, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            tcp.set_nonblocking(false).unwrap();
            let (crt, key, _) = cert_set(&mount).unwrap();
            let chain: Vec<_> =
                rustls::pki_types::CertificateDer::pem_slice_iter(crt.as_bytes()).map(Result::unwrap).collect();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(chain, key).unwrap();
            let mut conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
            let _ = conn.complete_io(&mut tcp);
        }
    });
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let client = Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth());
    let mut serials = BTreeSet::new();
    let mut keys = BTreeSet::new();
    let (mut handshakes, mut failures) = (0, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(120);
    while serials.len() < 9 && Instant::now() < deadline {
        if let Some((crt, key, _)) = cert_set(&agent.mount) {
            serials.insert(crt);
            keys.insert(key);
        }
        let name = rustls::pki_types::ServerName::try_from("api.shop.svc").unwrap();
        let mut conn = rustls::ClientConnection::new(client.clone(), name).unwrap();
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        handshakes += 1;
        while conn.is_handshaking() {
            if let Err(e) = conn.complete_io(&mut tcp) {
                failures.push(e.to_string());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    server.join().unwrap();
    assert!(serials.len() >= 9, "8 renewals in 2 minutes, saw {} certificates", serials.len());
    assert_eq!(keys.len(), serials.len(), "every certificate comes with a new key");
    assert!(
        failures.is_empty(),
        "{} of {handshakes} handshakes failed, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    // The keys never left the agent: not in a request, not in a response.
    let audit = serde_json::to_string(&bao.audit_entries()).unwrap();
    assert!(audit.contains("\"csr\""), "the audit log is raw and shows the CSRs");
    for key in &keys {
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!audit.contains(&body[..40]), "a private key is in OpenBao's audit log");
    }
    let key_texts: Vec<&str> = keys.iter().map(String::as_str).collect();
    agent.assert_log_has_no(&key_texts);
}

/// A role that refuses the common name stops a one-shot run at once, with
/// an error naming the annotation.
#[test]
fn a_refused_common_name_is_a_startup_error_naming_the_annotation() {
    let bao = OpenBao::start();
    pki(&bao);
    let tmp = tempfile::tempdir().unwrap();
    let token_path = tmp.path().join("token");
    std::fs::write(&token_path, bao.create_token(&["pki-web"], "1h")).unwrap();
    let mut agent = AgentProc::spawn(cert_config(&bao, &token_path, "web.example.com", "1m", 66), &["--once"]);
    let status = agent.wait_exit(Duration::from_secs(20));
    assert!(!status.success());
    let log = agent.log();
    assert!(log.contains("annotation sidekey.dev/cert-web"), "{log}");
    assert!(log.contains("web.example.com") && log.contains("pki/sign/web"), "{log}");
}

/// A file that cannot be rendered (a key the secret does not have) is
/// counted by file, so the SidekeyRenderFailing alert sees it, and the
/// agent does not become ready.
#[test]
fn a_file_that_cannot_be_rendered_is_counted_for_the_alert() {
    let bao = OpenBao::start();
    bao.kv_put("app/db", json!({"password": "render-value-456"}));
    let tmp = tempfile::tempdir().unwrap();
    let token = token_file(&bao, tmp.path(), "1h");
    let files = json!([{"name": "pw", "ref": "vault:secret/data/app/db#pasword", "mode": "0440"}]);
    let agent = AgentProc::spawn(config(&bao.addr, &token, files, "1s"), &[]);
    wait_until(
        "a render failure to be counted",
        Duration::from_secs(20),
        || agent.metric("sidekey_agent_render_failures_total{file=\"pw\"}") >= 1.0,
        || agent.metrics(),
    );
    assert_eq!(agent.metric("sidekey_agent_ready"), 0.0);
    agent.assert_log_has_no(&["render-value-456"]);
}

/// The request paths of the audit log's requests after the first `skip` entries.
fn requests_after(bao: &OpenBao, skip: usize) -> Vec<String> {
    bao.audit_entries()
        .into_iter()
        .skip(skip)
        .filter(|e| e["type"] == "request")
        .filter_map(|e| e["request"]["path"].as_str().map(str::to_owned))
        .collect()
}

/// `n` KV v2 secrets under `dir`, as files of an agent config.
fn kv_files(bao: &OpenBao, dir: &str, n: usize) -> serde_json::Value {
    let files: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            bao.kv_put(&format!("{dir}/s{i}"), json!({"v": unique("v")}));
            json!({"name": format!("s{i}"), "ref": format!("vault:secret/data/{dir}/s{i}#v"), "mode": "0440"})
        })
        .collect();
    json!(files)
}

#[test]
fn a_start_costs_one_request_per_path_over_at_most_two_connections() {
    let bao = OpenBao::start();
    let tmp = tempfile::tempdir().unwrap();
    let token = token_file(&bao, tmp.path(), "1h");
    let files = kv_files(&bao, "floor", 10);
    let proxy = TcpProxy::start(bao.addr.trim_start_matches("http://"));
    let before = bao.audit_entries().len();
    let mut agent = AgentProc::spawn(config(&proxy.url(), &token, files, "1h"), &[]);
    agent.wait_for("s9", Duration::from_secs(20));
    // The floor: the token's lookup and one read per path; no mount lookup.
    let mut paths = requests_after(&bao, before);
    paths.sort();
    let mut floor: Vec<String> = (0..10).map(|i| format!("secret/data/floor/s{i}")).collect();
    floor.push("auth/token/lookup-self".into());
    floor.sort();
    assert_eq!(paths, floor);
    assert_eq!(agent.metric("sidekey_agent_requests_total{backend=\"vault\"}"), 11.0);
    // Ten reads at once went two at a time over two connections, which
    // close once idle.
    assert!(proxy.peak_connections() <= 2, "{} connections at once", proxy.peak_connections());
    assert_eq!(proxy.total_connections(), 2, "connections were closed and opened again during the start");
    wait_until(
        "the agent to close its idle connections",
        Duration::from_secs(20),
        || proxy.open_connections() == 0,
        || format!("{} open", proxy.open_connections()),
    );
}

#[test]
fn a_rate_limit_quota_slows_a_herd_down_without_a_hot_loop() {
    let bao = OpenBao::start();
    // 10 reads a second on the KV mount, with Retry-After on each 429.
    bao.api("POST", "sys/quotas/config", Some(json!({"enable_rate_limit_response_headers": true}))).unwrap();
    bao.api("POST", "sys/quotas/rate-limit/kv", Some(json!({"path": "secret/", "rate": 10, "interval": "1s"})))
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let token = token_file(&bao, tmp.path(), "1h");
    let files = kv_files(&bao, "herd", 10);
    // 8 agents × 10 reads at once: 80 reads where 10 a second go through.
    let start = Instant::now();
    let mut agents: Vec<AgentProc> =
        (0..8).map(|_| AgentProc::spawn(config(&bao.addr, &token, files.clone(), "1h"), &[])).collect();
    for a in &mut agents {
        a.wait_for("s9", Duration::from_secs(120));
    }
    let took = start.elapsed();
    let mut throttled = 0.0;
    for a in &agents {
        let asked = a.metric("sidekey_agent_throttled_total{backend=\"vault\"}");
        let sent = a.metric("sidekey_agent_requests_total{backend=\"vault\"}");
        // Every request either went through once or was asked to wait: no
        // retries besides those, and few of them (a hot loop makes hundreds).
        assert_eq!(sent, 11.0 + asked, "requests of one agent: {sent}, throttled {asked}");
        assert!(asked <= 40.0, "an agent was throttled {asked} times: a hot loop");
        assert!(!a.log().contains("ERROR"), "{}", a.log());
        throttled += asked;
    }
    assert!(throttled > 0.0, "the quota never answered 429: the test tests nothing");
    eprintln!("80 reads under a 10/s quota: all ready in {took:?}, {throttled} answers 429 in all");
}
