//! `sidekey-agent` entry point (the agent is not built yet).

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("sidekey-agent: the agent is not built yet");
    ExitCode::from(69)
}
