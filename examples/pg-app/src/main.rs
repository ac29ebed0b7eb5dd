//! `sidekey-example-app`: see the library docs.

#![allow(clippy::print_stdout)]

use std::process::ExitCode;

fn main() -> ExitCode {
    let settings = match sidekey_example_app::Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sidekey-example-app: {e}");
            return ExitCode::from(64);
        }
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return ExitCode::from(1);
    };
    let s = runtime.block_on(sidekey_example_app::run(settings));
    let summary = serde_json::json!({
        "queries": s.queries, "failures": s.failures, "reconnects": s.reconnects, "users": s.users,
    });
    println!("{summary}");
    if s.failures == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
