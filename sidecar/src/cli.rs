//! The `sidekey-agent` command line: parses it, sets up logging and the
//! runtime, and calls [`crate::run`]. `main.rs` only calls [`main`], so
//! test harnesses can build the same program.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::Options;
use crate::exec::{self, ExecSpec};
use clap::{Parser, Subcommand};
use sidekey::agent_config::{ENV_VAR, ValidConfig};

/// sidekey's agent: writes secrets from Vault/OpenBao or AWS Secrets Manager
/// as files into an in-memory volume and keeps them current.
#[derive(Parser)]
#[command(name = "sidekey-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render the files and keep them current (the sidecar), or render once.
    Run {
        /// Render once and exit: 0 when every file was written, 1 otherwise.
        #[arg(long)]
        once: bool,
        /// Read the config from FILE instead of the SIDEKEY_CONFIG env var.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Exit 0 when every required file exists (the startup probe).
    Ready {
        /// Read the config from FILE instead of the SIDEKEY_CONFIG env var.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Copy this binary to DEST (for `env: exec` pods).
    Install {
        /// Where to copy the binary.
        dest: PathBuf,
    },
    /// Wait for the secret files, then start COMMAND with them as env vars.
    Exec {
        /// VAR=FILE: set VAR to the content of FILE. Repeatable.
        #[arg(long = "env", value_name = "VAR=FILE", value_parser = exec::parse_env)]
        vars: Vec<(String, PathBuf)>,
        /// DIR[:PREFIX]: set PREFIX+NAME for every file NAME in DIR. Repeatable.
        #[arg(long = "env-dir", value_name = "DIR[:PREFIX]")]
        dirs: Vec<String>,
        /// How long to wait for the files.
        #[arg(long, default_value = "2m", value_parser = sidekey::duration::parse)]
        timeout: std::time::Duration,
        /// Supervise the command and restart it whenever the files in DIR
        /// change (for apps that read secrets from env vars only at start).
        #[arg(long, value_name = "DIR")]
        restart_on_change: Option<PathBuf>,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<std::ffi::OsString>,
    },
}

fn load_config(path: Option<&PathBuf>) -> Result<ValidConfig, String> {
    let text = match path {
        Some(p) => std::fs::read_to_string(p).map_err(|e| format!("--config {}: {e}", p.display()))?,
        None => std::env::var(ENV_VAR).map_err(|_| format!("no configuration: set {ENV_VAR} or pass --config FILE"))?,
    };
    ValidConfig::from_json(&text).map_err(|e| e.to_string())
}

/// Runs the command line; returns the exit code.
pub fn main() -> ExitCode {
    // Before arguments, config or logs: from its first instruction a
    // same-UID process of the pod must not reach into this one.
    let hardened = crate::harden_process();
    let cli = Cli::parse();
    match cli.command {
        Command::Ready { config } => match load_config(config.as_ref()) {
            Ok(c) if exec::ready(&c) => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) => {
                eprintln!("sidekey-agent: {e}");
                ExitCode::from(64)
            }
        },
        Command::Install { dest } => match exec::install(&dest) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sidekey-agent install {}: {e}", dest.display());
                ExitCode::from(1)
            }
        },
        Command::Exec { vars, dirs, timeout, restart_on_change, command } => {
            let spec = ExecSpec {
                vars,
                dirs: dirs.iter().map(|d| exec::parse_env_dir(d)).collect(),
                timeout,
                command,
                restart_on_change,
            };
            let err = exec::exec(&spec);
            eprintln!("sidekey-agent exec: {err}");
            ExitCode::from(if matches!(err, exec::ExecError::Usage(_)) { 64 } else { 1 })
        }
        Command::Run { once, config } => {
            sidekey_runtime::init_logging();
            let config = match load_config(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(error = %e, "invalid configuration");
                    return ExitCode::from(64);
                }
            };
            if let Err(e) = hardened {
                tracing::warn!(error = %e, "could not make the agent non-dumpable");
            }
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the runtime");
                    return ExitCode::from(1);
                }
            };
            let result =
                runtime.block_on(crate::run(config, Options { once }, sidekey_runtime::shutdown_signal(), |_| {}));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.is_config() => {
                    tracing::error!(error = %e, "invalid configuration");
                    ExitCode::from(64)
                }
                Err(e) => {
                    tracing::error!(error = %e, "the secret files could not be written");
                    ExitCode::from(1)
                }
            }
        }
    }
}
