//! `sidekey-injector` entry point (the webhook server is not built yet).

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("sidekey-injector: the webhook server is not built yet; use `sidekey inject` meanwhile");
    ExitCode::from(69)
}
