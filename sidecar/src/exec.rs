//! The small commands around the agent: `ready` (the startup probe),
//! `install` (copies the binary for `exec` mode) and `exec` (starts the app
//! with its secrets as env vars that exist only in its process).

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sidekey::agent_config::AgentConfig;
use zeroize::Zeroizing;

/// Whether every non-optional file of `config` exists in its mount path.
pub fn ready(config: &AgentConfig) -> bool {
    let root = Path::new(&config.mount_path);
    config.files.iter().filter(|f| !f.optional).all(|f| root.join(&f.name).exists())
}

/// Copies the running binary to `dest` (mode 0555), atomically.
///
/// # Errors
/// When the binary cannot be read or `dest` written.
pub fn install(dest: &Path) -> std::io::Result<()> {
    let me = std::env::current_exe()?;
    let tmp = dest.with_extension("tmp");
    std::fs::copy(&me, &tmp)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o555))?;
    std::fs::rename(&tmp, dest)
}

/// What `exec` sets up.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    /// `VAR` ← content of `FILE`.
    pub vars: Vec<(String, PathBuf)>,
    /// Every file of `DIR` as `PREFIX` + file name.
    pub dirs: Vec<(PathBuf, String)>,
    /// How long to wait for the files.
    pub timeout: Duration,
    /// The command and its arguments.
    pub command: Vec<OsString>,
    /// Supervise instead of `exec`: restart the command whenever the
    /// `..data` version of this directory changes.
    pub restart_on_change: Option<PathBuf>,
}

/// Why `exec` could not start the app.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The files did not appear in time.
    #[error("timed out after {timeout:?} waiting for {missing}")]
    Timeout {
        /// The bound.
        timeout: Duration,
        /// The first missing path.
        missing: String,
    },
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The command could not be started.
    #[error("starting {command}: {source}")]
    Start {
        /// The program.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Parses `VAR=FILE`.
///
/// # Errors
/// When there is no `=` or the name is not a variable name.
pub fn parse_env(s: &str) -> Result<(String, PathBuf), String> {
    let (var, file) = s.split_once('=').ok_or_else(|| format!("--env {s:?}: expected VAR=FILE"))?;
    if var.is_empty() || var.contains(char::is_whitespace) {
        return Err(format!("--env {s:?}: bad variable name"));
    }
    Ok((var.to_owned(), PathBuf::from(file)))
}

/// Parses `DIR[:PREFIX]`.
pub fn parse_env_dir(s: &str) -> (PathBuf, String) {
    match s.split_once(':') {
        Some((d, p)) => (PathBuf::from(d), p.to_owned()),
        None => (PathBuf::from(s), String::new()),
    }
}

fn wait_for_files(spec: &ExecSpec) -> Result<(), ExecError> {
    let deadline = std::time::SystemTime::now() + spec.timeout;
    let paths: Vec<&Path> =
        spec.vars.iter().map(|(_, p)| p.as_path()).chain(spec.dirs.iter().map(|(d, _)| d.as_path())).collect();
    while let Some(missing) = paths.iter().find(|p| !p.exists()) {
        if std::time::SystemTime::now() > deadline {
            return Err(ExecError::Timeout { timeout: spec.timeout, missing: missing.display().to_string() });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Waits for the files, builds the environment and replaces this process
/// with the command (or, with `restart_on_change`, supervises it). Returns
/// only on error; a supervised command's exit status becomes ours.
pub fn exec(spec: &ExecSpec) -> ExecError {
    use std::os::unix::process::CommandExt;
    if spec.command.is_empty() {
        return ExecError::Usage("exec needs a command after --".into());
    }
    if let Err(e) = wait_for_files(spec) {
        return e;
    }
    if spec.restart_on_change.is_some() {
        return supervise(spec);
    }
    let mut cmd = match command(spec) {
        Ok(c) => c,
        Err(e) => return e,
    };
    let source = cmd.exec();
    ExecError::Start { command: spec.command[0].to_string_lossy().into_owned(), source }
}

/// The command with the secrets in its environment.
fn command(spec: &ExecSpec) -> Result<std::process::Command, ExecError> {
    let (program, args) = spec.command.split_first().ok_or_else(|| ExecError::Usage("exec needs a command".into()))?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args);
    for (var, path) in &spec.vars {
        match std::fs::read(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                cmd.env(var, std::ffi::OsStr::from_bytes_compat(&bytes));
            }
            Err(source) => return Err(ExecError::Read { path: path.display().to_string(), source }),
        }
    }
    for (dir, prefix) in &spec.dirs {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(source) => return Err(ExecError::Read { path: dir.display().to_string(), source }),
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            match std::fs::read(e.path()) {
                Ok(bytes) => {
                    let bytes = Zeroizing::new(bytes);
                    cmd.env(format!("{prefix}{name}"), std::ffi::OsStr::from_bytes_compat(&bytes));
                }
                Err(source) => return Err(ExecError::Read { path: e.path().display().to_string(), source }),
            }
        }
    }
    Ok(cmd)
}

/// Runs the command as a child and restarts it (SIGTERM, then SIGKILL after
/// 10 s) whenever the files change; forwards SIGTERM and SIGINT; exits with
/// the child's status when it ends by itself. For apps that read secrets
/// only from env vars at start and cannot re-read files.
fn supervise(spec: &ExecSpec) -> ExecError {
    use std::sync::atomic::{AtomicI32, Ordering};
    static STOP: AtomicI32 = AtomicI32::new(0);
    let dir = spec.restart_on_change.clone().unwrap_or_default();
    let version = || std::fs::read_link(dir.join(crate::writer::DATA_DIR)).ok();
    // A thread that turns SIGTERM/SIGINT into a flag (no async runtime needed).
    let signals = std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        if let Ok(rt) = rt {
            rt.block_on(async {
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                let term = async {
                    match term.as_mut() {
                        Some(t) => {
                            t.recv().await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                };
                tokio::select! {
                    () = term => STOP.store(15, Ordering::SeqCst),
                    _ = tokio::signal::ctrl_c() => STOP.store(2, Ordering::SeqCst),
                }
            });
        }
    });
    drop(signals);
    loop {
        let seen = version();
        let mut child = match command(spec).and_then(|mut c| {
            c.spawn()
                .map_err(|source| ExecError::Start { command: spec.command[0].to_string_lossy().into_owned(), source })
        }) {
            Ok(c) => c,
            Err(e) => return e,
        };
        let pid = rustix::process::Pid::from_child(&child);
        loop {
            std::thread::sleep(Duration::from_millis(250));
            if let Ok(Some(status)) = child.try_wait() {
                std::process::exit(status.code().unwrap_or(1));
            }
            let stop = STOP.load(Ordering::SeqCst);
            if stop != 0 {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                let status = child.wait().ok().and_then(|s| s.code()).unwrap_or(128 + stop);
                std::process::exit(status);
            }
            if version() != seen {
                eprintln!("sidekey-agent exec: the files changed; restarting the command");
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                let deadline = std::time::SystemTime::now() + Duration::from_secs(10);
                while matches!(child.try_wait(), Ok(None)) && std::time::SystemTime::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
        }
    }
}

trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_and_dirs() {
        assert_eq!(parse_env("A=/run/x").unwrap(), ("A".into(), PathBuf::from("/run/x")));
        assert!(parse_env("A").is_err());
        assert!(parse_env("=x").is_err());
        assert_eq!(parse_env_dir("/run/d:APP_"), (PathBuf::from("/run/d"), "APP_".into()));
        assert_eq!(parse_env_dir("/run/d"), (PathBuf::from("/run/d"), String::new()));
    }
}
