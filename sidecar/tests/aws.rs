//! The agent against AWS Secrets Manager and STS served by moto. Every test
//! scans the agent's log for the secret values it used.

#![allow(clippy::unwrap_used, clippy::disallowed_methods, missing_docs)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use sidekey_testenv::{Moto, wait_until};
use support::AgentProc;

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:016x}", fastrand::u64(..))
}

fn aws_config(moto: &Moto, files: Value, refresh: &str) -> Value {
    json!({
        "mountPath": "/placeholder",
        "refresh": refresh,
        "startupTimeout": "30s",
        "files": files,
        "aws": {"region": moto.region, "endpoint": moto.endpoint},
    })
}

const STATIC_KEYS: [(&str, &str); 2] = [("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")];

#[test]
fn reads_json_string_and_binary_secrets_and_follows_new_versions_with_one_check_call() {
    let moto = Moto::start();
    let (p1, p2, plain) = (unique("p1"), unique("p2"), unique("plain"));
    moto.create_secret(
        "prod/db",
        &json!({"password": p1, "user": "app", "nested": {"host": "db.internal"}}).to_string(),
    );
    moto.create_secret("prod/token", &plain);
    moto.create_binary_secret("prod/keystore", "AAECA/7/"); // bytes 00 01 02 03 fe ff
    let files = json!([
        {"name": "db-password", "ref": "aws-sm:prod/db#password", "mode": "0440"},
        {"name": "db-host", "ref": "aws-sm:prod/db#nested.host", "mode": "0440"},
        {"name": "token", "ref": "aws-sm:prod/token", "mode": "0440"},
        {"name": "keystore", "ref": "aws-sm:prod/keystore", "mode": "0400"},
    ]);
    let mut agent = AgentProc::spawn_with_env(aws_config(&moto, files, "2s"), &[], &STATIC_KEYS);
    agent.wait_for("keystore", Duration::from_secs(30));
    assert_eq!(agent.read("db-password"), p1);
    assert_eq!(agent.read("db-host"), "db.internal");
    assert_eq!(agent.read("token"), plain);
    assert_eq!(std::fs::read(agent.mount.join("keystore")).unwrap(), [0, 1, 2, 3, 0xfe, 0xff]);

    std::thread::sleep(Duration::from_secs(6));
    let counts = moto.request_counts();
    // The four start-up reads went out as one batch, and so did each
    // refresh's version checks; nothing was read again while unchanged.
    assert!(counts.get("BatchGetSecretValue").copied().unwrap_or(0) >= 3, "{counts:?}");
    assert_eq!(counts.get("GetSecretValue"), None, "{counts:?}");
    assert_eq!(counts.get("DescribeSecret"), None, "{counts:?}");

    moto.put_secret_value(
        "prod/db",
        &json!({"password": p2, "user": "app", "nested": {"host": "db.internal"}}).to_string(),
    );
    let took = agent.wait_for_content("db-password", &p2, Duration::from_secs(3));
    assert!(took <= Duration::from_secs(3), "{took:?}");
    // A change is one read of that secret alone.
    assert_eq!(moto.request_counts().get("GetSecretValue"), Some(&1));
    agent.assert_log_has_no(&[&p1, &p2, &plain]);
}

#[test]
fn irsa_web_identity_assumes_the_role_through_sts() {
    let moto = Moto::start();
    let role = moto.create_web_identity_role("checkout-secrets-reader");
    let value = unique("irsa");
    moto.create_secret("prod/checkout", &value);
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6c2hvcDpjaGVja291dCJ9.c2ln")
        .unwrap();
    let files = json!([{"name": "v", "ref": "aws-sm:prod/checkout", "mode": "0440"}]);
    let token_path = token.display().to_string();
    let env = [
        ("AWS_ROLE_ARN", role.as_str()),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_path.as_str()),
        ("AWS_ROLE_SESSION_NAME", "sidekey-test"),
        ("AWS_ENDPOINT_URL", moto.endpoint.as_str()),
    ];
    let mut agent = AgentProc::spawn_with_env(aws_config(&moto, files, "5m"), &[], &env);
    agent.wait_for("v", Duration::from_secs(30));
    assert_eq!(agent.read("v"), value);
    let counts = moto.request_counts();
    assert_eq!(counts.get("AssumeRoleWithWebIdentity"), Some(&1), "{counts:?}");
    agent.assert_log_has_no(&[&value]);
}

#[test]
fn keeps_the_last_good_file_when_the_secret_is_deleted_and_names_a_missing_key_at_start() {
    let moto = Moto::start();
    let value = unique("kept");
    moto.create_secret("prod/gone", &json!({"k": value}).to_string());
    let files = json!([{"name": "k", "ref": "aws-sm:prod/gone#k", "mode": "0440"}]);
    let mut agent = AgentProc::spawn_with_env(aws_config(&moto, files, "1s"), &[], &STATIC_KEYS);
    agent.wait_for("k", Duration::from_secs(30));
    moto.delete_secret("prod/gone");
    wait_until(
        "the failure to be counted",
        Duration::from_secs(10),
        || agent.metric("sidekey_agent_failures_total{") >= 1.0,
        || agent.log(),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(agent.read("k"), value, "the last good file must stay");
    assert!(agent.log().contains("prod/gone"), "the log names the secret");
    agent.assert_log_has_no(&[&value]);

    // Read in one batch with a secret that does not exist: that one is named, the start fails.
    let files = json!([{"name": "k", "ref": "aws-sm:prod/nonexistent#k", "mode": "0440"},
                       {"name": "v", "ref": "aws-sm:prod/token-present", "mode": "0440"}]);
    moto.create_secret("prod/token-present", &value);
    let mut once = AgentProc::spawn_with_env(aws_config(&moto, files, "5m"), &["--once"], &STATIC_KEYS);
    assert_eq!(once.wait_exit(Duration::from_secs(30)).code(), Some(1));
    let log = once.log();
    assert!(log.contains("prod/nonexistent") && log.contains("ResourceNotFoundException"), "{log}");
    once.assert_log_has_no(&[&value]);

    moto.create_secret("prod/other", &json!({"present": value}).to_string());
    let files = json!([{"name": "k", "ref": "aws-sm:prod/other#missing", "mode": "0440"}]);
    let mut once = AgentProc::spawn_with_env(aws_config(&moto, files, "5m"), &["--once"], &STATIC_KEYS);
    assert_eq!(once.wait_exit(Duration::from_secs(30)).code(), Some(1));
    let log = once.log();
    assert!(
        log.contains("\"missing\" not found") && log.contains("present") && log.contains("aws-sm:prod/other"),
        "{log}"
    );
    once.assert_log_has_no(&[&value]);
}

/// With moto enforcing IAM: a user that may not read a secret gets a clear
/// start-up error naming the reference (`--once` exits 1); a user whose
/// access is taken away later keeps its last good file, counts the failure
/// and logs the denial, never the value.
#[test]
fn access_denied_names_the_reference_at_start_and_keeps_the_last_good_file_later() {
    let moto = Moto::start();
    let (v1, v2) = (unique("denied-v1"), unique("denied-v2"));
    moto.create_secret("prod/guarded", &json!({"k": v1}).to_string());
    moto.create_secret("prod/open", &json!({"k": "open-value"}).to_string());
    let (reader_id, reader_key) =
        moto.create_user("reader", &["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]);
    let (nobody_id, nobody_key) = moto.create_user("nobody", &["secretsmanager:ListSecrets"]);
    moto.enforce_iam(true);
    let files = json!([{"name": "k", "ref": "aws-sm:prod/guarded#k", "mode": "0440"}]);

    let nobody = [("AWS_ACCESS_KEY_ID", nobody_id.as_str()), ("AWS_SECRET_ACCESS_KEY", nobody_key.as_str())];
    let mut once = AgentProc::spawn_with_env(aws_config(&moto, files, "5m"), &["--once"], &nobody);
    assert_eq!(once.wait_exit(Duration::from_secs(30)).code(), Some(1), "{}", once.log());
    let log = once.log();
    assert!(log.contains("aws-sm:prod/guarded") && log.contains("access denied (HTTP 403)"), "{log}");

    // The reader may not BatchGetSecretValue: the agent falls back to one read per secret.
    let reader = [("AWS_ACCESS_KEY_ID", reader_id.as_str()), ("AWS_SECRET_ACCESS_KEY", reader_key.as_str())];
    let two = json!([{"name": "k", "ref": "aws-sm:prod/guarded#k", "mode": "0440"},
                     {"name": "open", "ref": "aws-sm:prod/open#k", "mode": "0440"}]);
    let mut agent = AgentProc::spawn_with_env(aws_config(&moto, two, "1s"), &[], &reader);
    agent.wait_for("k", Duration::from_secs(30));
    agent.wait_for("open", Duration::from_secs(30));
    assert_eq!(agent.read("k"), v1);
    assert!(agent.log().contains("BatchGetSecretValue refused; reading secrets one by one"), "{}", agent.log());
    // Access taken away, and a new version the agent may not read.
    moto.enforce_iam(false);
    moto.put_user_policy("reader", &["secretsmanager:DescribeSecret"]);
    moto.put_secret_value("prod/guarded", &json!({"k": v2}).to_string());
    moto.enforce_iam(true);
    wait_until(
        "the denial to be counted",
        Duration::from_secs(15),
        || agent.metric("sidekey_agent_failures_total{") >= 1.0,
        || agent.log(),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(agent.read("k"), v1, "the last good file must stay");
    let log = agent.log();
    assert!(log.contains("access denied (HTTP 403)") && log.contains("prod/guarded"), "{log}");
    agent.assert_log_has_no(&[&v1, &v2]);
    once.assert_log_has_no(&[&v1, &v2]);
}

/// The calls a refresh costs: one `BatchGetSecretValue` per 20 current
/// secrets, made together by the agent's sources on its refresh tick; and,
/// for a role without `secretsmanager:BatchGetSecretValue`, one
/// `DescribeSecret` per secret.
#[test]
fn version_checks_cost_one_call_per_twenty_secrets_per_refresh_or_one_per_secret_without_the_permission() {
    let moto = Moto::start();
    let files: Vec<Value> = (0..45)
        .map(|i| {
            moto.create_secret(&format!("fleet/s{i}"), &unique("v"));
            json!({"name": format!("s{i}"), "ref": format!("aws-sm:fleet/s{i}"), "mode": "0440"})
        })
        .collect();
    let started = std::time::Instant::now();
    let mut agent = AgentProc::spawn_with_env(aws_config(&moto, json!(files), "2s"), &[], &STATIC_KEYS);
    agent.wait_for("s44", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(7));
    let counted = agent.metric("sidekey_agent_requests_total{backend=\"aws\"}") as usize;
    let (_, status) = agent.terminate();
    assert!(status.success(), "{}", agent.log());
    let counts = moto.request_counts();
    let batches = counts.get("BatchGetSecretValue").copied().unwrap_or(0);
    // 3 calls (20 + 20 + 5) for the start, and 3 per refresh tick after it
    // (the last tick may be cut short by the agent's end): never one per
    // secret, which would be 45 per tick.
    let ticks = started.elapsed().as_secs() as usize / 2 + 1;
    assert!(
        (9..=3 * (ticks + 1)).contains(&batches),
        "{batches} BatchGetSecretValue calls in {ticks} ticks: {counts:?}"
    );
    assert_eq!(counts.get("DescribeSecret"), None, "{counts:?}");
    assert_eq!(counts.get("GetSecretValue"), None, "{counts:?}");
    // The agent counts what it sends (a tick may have passed since).
    assert!(counted <= batches && batches - counted <= 3, "counted {counted}, served {batches}");

    // Without the permission: one call per secret, for reads and checks.
    let (id, key) = moto.create_user("no-batch", &["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]);
    moto.enforce_iam(true);
    let before = moto.request_counts();
    let user = [("AWS_ACCESS_KEY_ID", id.as_str()), ("AWS_SECRET_ACCESS_KEY", key.as_str())];
    let few: Vec<Value> =
        (0..5).map(|i| json!({"name": format!("s{i}"), "ref": format!("aws-sm:fleet/s{i}"), "mode": "0440"})).collect();
    let alone_started = std::time::Instant::now();
    let mut alone = AgentProc::spawn_with_env(aws_config(&moto, json!(few), "2s"), &[], &user);
    alone.wait_for("s4", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(5));
    alone.terminate();
    let after = moto.request_counts();
    let delta = |op: &str| after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0);
    assert_eq!(delta("BatchGetSecretValue"), 1, "refused once, then never asked again: {after:?}");
    assert_eq!(delta("GetSecretValue"), 5, "{after:?}");
    // One per secret per refresh tick; the agent's end may cut the last
    // tick short (some secrets checked, not all).
    let describes = delta("DescribeSecret");
    let ticks = alone_started.elapsed().as_secs() as usize / 2 + 1;
    assert!((5..=5 * ticks).contains(&describes), "{describes} DescribeSecret calls in {ticks} ticks: {after:?}");
    assert!(alone.log().contains("BatchGetSecretValue refused"), "{}", alone.log());
}
