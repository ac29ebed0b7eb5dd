//! The example app, as `sidekey-example-app`.

#![allow(clippy::print_stdout)]

fn main() -> std::process::ExitCode {
    let Ok(settings) = sidekey_example_app::Settings::from_env() else {
        return std::process::ExitCode::from(64);
    };
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return std::process::ExitCode::from(1);
    };
    let s = rt.block_on(sidekey_example_app::run(settings));
    println!(
        "{}",
        serde_json::json!({"queries": s.queries, "failures": s.failures, "reconnects": s.reconnects, "users": s.users})
    );
    std::process::ExitCode::from(u8::from(s.failures != 0))
}
