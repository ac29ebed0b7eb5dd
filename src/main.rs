//! The `sidekey` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sidekey::cli;

/// sidekey takes secrets out of Kubernetes pod specs and env vars: an agent
/// sidecar writes them as files into an in-memory volume and keeps them current.
#[derive(Parser)]
#[command(name = "sidekey", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Inject(cli::inject::InjectArgs),
    Audit(cli::audit::AuditArgs),
    Migrate(cli::migrate::MigrateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Inject(args) => cli::inject::run(&args, &mut std::io::stdout().lock(), &mut std::io::stderr().lock()),
        Command::Audit(args) => cli::audit::run(&args, &mut std::io::stdout().lock(), &mut std::io::stderr().lock()),
        Command::Migrate(args) => {
            cli::migrate::run(&args, &mut std::io::stdout().lock(), &mut std::io::stderr().lock())
        }
    };
    ExitCode::from(code)
}
