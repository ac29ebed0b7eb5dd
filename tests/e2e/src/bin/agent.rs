//! The agent, as `sidekey-agent`.

fn main() -> std::process::ExitCode {
    sidekey_agent::cli::main()
}
