//! Runs the real `sidekey-agent` binary for integration tests.

#![allow(dead_code, clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sidekey_testenv::{OpenBao, free_port, wait_until};
use tempfile::TempDir;

/// The policy the agent's tokens get in these tests.
pub const POLICY: &str = r#"
path "secret/data/*" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["read"] }
path "database/creds/*" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
path "sys/internal/ui/mounts/*" { capabilities = ["read"] }
"#;

/// A running agent process with its mount directory and log.
pub struct AgentProc {
    child: Option<Child>,
    /// The config and arguments it was started with, for a restart.
    started: (Value, Vec<String>, Vec<(String, String)>),
    pub dir: TempDir,
    pub mount: PathBuf,
    pub log: PathBuf,
    pub metrics_url: String,
}

/// A token (with [`POLICY`]) in a file, for token auth.
pub fn token_file(bao: &OpenBao, dir: &Path, ttl: &str) -> PathBuf {
    bao.put_policy("app", POLICY);
    let token = bao.create_token(&["app"], ttl);
    let path = dir.join("vault-token");
    std::fs::write(&path, token).unwrap();
    path
}

/// An agent config with token auth against `addr`.
pub fn config(addr: &str, token_path: &Path, files: Value, refresh: &str) -> Value {
    json!({
        "mountPath": "/placeholder",
        "refresh": refresh,
        "startupTimeout": "30s",
        "files": files,
        "vault": {"addr": addr, "auth": {"method": "token", "tokenPath": token_path}},
    })
}

impl AgentProc {
    /// Starts `sidekey-agent run` (plus `extra` args) with `config`; the
    /// mount path and metrics address are filled in.
    pub fn spawn(config: Value, extra: &[&str]) -> AgentProc {
        Self::spawn_with_env(config, extra, &[])
    }

    /// Like [`AgentProc::spawn`], with extra environment variables.
    pub fn spawn_with_env(mut config: Value, extra: &[&str], env: &[(&str, &str)]) -> AgentProc {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("secrets");
        std::fs::create_dir(&mount).unwrap();
        let port = free_port();
        config["mountPath"] = json!(mount);
        config["metricsAddr"] = json!(format!("127.0.0.1:{port}"));
        let log = dir.path().join("agent.log");
        let started = (
            config,
            extra.iter().map(|s| s.to_string()).collect(),
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        );
        let child = Self::start(&started, &log);
        AgentProc {
            child: Some(child),
            started,
            dir,
            mount,
            log,
            metrics_url: format!("http://127.0.0.1:{port}/metrics"),
        }
    }

    fn start(started: &(Value, Vec<String>, Vec<(String, String)>), log: &Path) -> Child {
        let (config, extra, env) = started;
        let out = std::fs::File::options().create(true).append(true).open(log).unwrap();
        Command::new(env!("CARGO_BIN_EXE_sidekey-agent"))
            .arg("run")
            .args(extra)
            .env("SIDEKEY_CONFIG", config.to_string())
            .env("SIDEKEY_LOG", "debug")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_PROFILE")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap()
    }

    /// Kills the agent with SIGKILL (no chance to clean up, as when the
    /// kubelet or the OOM killer ends it) and starts it again with the same
    /// config, mount and log, as the kubelet restarts a sidecar.
    pub fn kill_and_restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.child = Some(Self::start(&self.started, &self.log));
    }

    /// Everything the agent logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails if any of `values` appears in the agent's log.
    pub fn assert_log_has_no(&self, values: &[&str]) {
        let log = self.log();
        for v in values {
            assert!(!v.is_empty() && !log.contains(v), "a secret value appears in the agent log");
        }
    }

    /// Waits until `file` exists.
    pub fn wait_for(&mut self, file: &str, timeout: Duration) {
        let path = self.mount.join(file);
        wait_until(&format!("{file} to be written"), timeout, || path.exists(), || self.log());
    }

    /// The content of `file`.
    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.mount.join(file)).unwrap_or_default()
    }

    /// Waits until `file` holds `expected`; returns how long that took.
    pub fn wait_for_content(&self, file: &str, expected: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        wait_until(&format!("{file} to change"), timeout, || self.read(file) == expected, || self.log());
        start.elapsed()
    }

    /// The metrics text.
    pub fn metrics(&self) -> String {
        ureq::get(&self.metrics_url)
            .call()
            .map(|mut r| r.body_mut().read_to_string().unwrap_or_default())
            .unwrap_or_default()
    }

    /// The value of the first metric line starting with `prefix`.
    pub fn metric(&self, prefix: &str) -> f64 {
        self.metrics()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Sends SIGTERM and waits; returns how long the exit took and the status.
    pub fn terminate(&mut self) -> (Duration, std::process::ExitStatus) {
        let mut child = self.child.take().unwrap();
        let start = Instant::now();
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let status = child.wait().unwrap();
        (start.elapsed(), status)
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the agent did not exit within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Reads `names` from one version of the files (resolving `..data` once),
/// or `None` when that version vanished mid-read.
pub fn read_consistent(mount: &Path, names: &[&str]) -> Option<Vec<String>> {
    let version = std::fs::read_link(mount.join("..data")).ok()?;
    names.iter().map(|n| std::fs::read_to_string(mount.join(&version).join(n)).ok()).collect()
}
